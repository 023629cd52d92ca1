#!/usr/bin/env node
// The npm launcher for breadboard: finds the native binary shipped in this platform's optional dependency
// (breadboard-cli-<os>-<cpu>) and runs it with the same arguments and stdio. No postinstall is involved, so
// `npm install -g --ignore-scripts`, pnpm and yarn work the same. See docs/distribution.md.
"use strict";

const { spawn } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const PACKAGE_ROOT = path.resolve(__dirname, "..");
const pkg = require(path.join(PACKAGE_ROOT, "package.json"));

// process.platform-process.arch -> platform package. Filled from the same table build.mjs uses.
const PLATFORM_PACKAGES = {
  "linux-x64": "breadboard-cli-linux-x64",
  "linux-arm64": "breadboard-cli-linux-arm64",
  "darwin-x64": "breadboard-cli-darwin-x64",
  "darwin-arm64": "breadboard-cli-darwin-arm64",
};

function fail(lines) {
  process.stderr.write(lines.map((l) => `breadboard: ${l}`).join("\n") + "\n");
  process.exit(1);
}

function managedBy() {
  const ua = process.env.npm_config_user_agent || "";
  for (const pm of ["pnpm", "yarn", "bun"]) {
    if (ua.startsWith(`${pm}/`)) return pm;
  }
  const where = __dirname.split(path.sep).join("/");
  if (where.includes("/.bun/install/global/")) return "bun";
  if (where.includes("/pnpm/global/") || where.includes("/.pnpm/")) return "pnpm";
  if (where.includes("/yarn/global/")) return "yarn";
  return "npm";
}

function findBinary() {
  const override = process.env.BREADBOARD_BINARY_PATH;
  if (override) return override;

  const key = `${process.platform}-${process.arch}`;
  const platformPkg = PLATFORM_PACKAGES[key];
  if (!platformPkg) {
    fail([
      `no prebuilt binary for ${key}; breadboard is published for: ${Object.keys(PLATFORM_PACKAGES).join(", ")}.`,
      "Build it from source (cargo build --release) and point BREADBOARD_BINARY_PATH at it.",
    ]);
  }
  let dir;
  try {
    dir = path.dirname(require.resolve(`${platformPkg}/package.json`, { paths: [PACKAGE_ROOT] }));
  } catch {
    // <prefix>/lib/node_modules/<pkg> is npm's global layout (Unix); anything else is a project install.
    const global = /[\\/]lib[\\/]node_modules[\\/][^\\/]+$/.test(PACKAGE_ROOT) ? " -g" : "";
    fail([
      `the platform package ${platformPkg} is not installed, so there is no breadboard binary to run.`,
      "npm skips optional dependencies with --omit=optional / --no-optional (or after a lockfile made on another platform).",
      "Fix it with:",
      `  npm install${global} ${pkg.name}@${pkg.version} --include=optional`,
      "or add the binary package directly:",
      `  npm install${global} ${platformPkg}@${pkg.version}`,
    ]);
  }
  const bin = path.join(dir, "bin", "breadboard");
  if (!fs.existsSync(bin)) {
    fail([`${platformPkg} is installed at ${dir} but has no bin/breadboard; reinstall ${pkg.name}.`]);
  }
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    try {
      fs.chmodSync(bin, 0o755); // some package managers drop the mode bits of non-bin files
    } catch {
      // fall through: spawn reports EACCES
    }
  }
  return bin;
}

const bin = findBinary();
const env = {
  ...process.env,
  BREADBOARD_MANAGED_BY: managedBy(),
  BREADBOARD_PACKAGE_ROOT: PACKAGE_ROOT,
};
const child = spawn(bin, process.argv.slice(2), { stdio: "inherit", env });

// Ctrl-C at a terminal sends SIGINT to the terminal's whole foreground process group: this launcher and the binary
// (which runs in our group). Forwarding that SIGINT as well would deliver it twice, and a second SIGINT means "stop
// now" to many programs (breadboard's foreground supervisor escalates to SIGKILL). So a SIGINT is forwarded only when
// this process is not in its terminal's foreground group: no terminal, a background job, `kill -INT <pid>` from a
// script. Linux tells through /proc; elsewhere every SIGINT is forwarded.
function inTerminalForeground() {
  try {
    const stat = fs.readFileSync("/proc/self/stat", "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // state ppid pgrp session tty_nr tpgid ...
    const pgrp = Number(fields[2]);
    const tpgid = Number(fields[5]);
    return tpgid > 0 && tpgid === pgrp;
  } catch {
    return false;
  }
}

const FORWARDED = ["SIGINT", "SIGTERM", "SIGHUP"];
const forward = (signal) => {
  if (signal === "SIGINT" && inTerminalForeground()) return; // the binary got it from the terminal already
  if (child.exitCode === null && child.signalCode === null) {
    try {
      child.kill(signal);
    } catch {
      // the child is already gone
    }
  }
};
for (const signal of FORWARDED) process.on(signal, forward);

child.on("error", (err) => {
  fail([`cannot run ${bin}: ${err.message}`]);
});

child.on("exit", (code, signal) => {
  if (signal) {
    // Die by the same signal, so the caller sees what the binary saw.
    for (const s of FORWARDED) process.removeAllListeners(s);
    process.kill(process.pid, signal);
    const n = os.constants.signals[signal] || 1;
    setTimeout(() => process.exit(128 + n), 200); // if the signal is ignored or blocked
    return;
  }
  process.exit(code === null ? 1 : code);
});
