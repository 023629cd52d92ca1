#!/usr/bin/env node
// Build the npm packages from a release tree written by scripts/dist.
//
//   node npm-wrapper/build.mjs [--dist DIR] [--version V] [--out DIR] [--repository URL] [--pack]
//
//   --dist DIR        release tree (default dist/); reads DIR/V/SHA256SUMS and the tarballs beside it
//   --version V       default: the version in DIR/latest/manifest.json
//   --out DIR         where the package directories go (default DIR/npm)
//   --repository URL  the source repository (e.g. https://github.com/OWNER/breadboard), written into every
//                     package.json; `npm publish --provenance` requires it to match the repository that builds
//   --pack            also run `npm pack` in each package directory (tarballs land in --out)
//
// Writes one platform package per platform present in the release (breadboard-cli-<os>-<cpu>, with os/cpu fields
// and the binary at bin/breadboard), then the main package breadboard-cli whose optionalDependencies name exactly
// those platform packages at exactly version V. Publish the platform packages first, then the main one.
// Each tarball's sha256 is checked against SHA256SUMS before its binary is used.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const MAIN = "breadboard-cli";

// target triple -> npm platform. A static musl build is preferred over a glibc one for the same platform.
const TARGETS = [
  { target: "x86_64-unknown-linux-musl", platform: "linux-x64", os: "linux", cpu: "x64" },
  { target: "x86_64-unknown-linux-gnu", platform: "linux-x64", os: "linux", cpu: "x64", libc: "glibc" },
  { target: "aarch64-unknown-linux-musl", platform: "linux-arm64", os: "linux", cpu: "arm64" },
  { target: "aarch64-unknown-linux-gnu", platform: "linux-arm64", os: "linux", cpu: "arm64", libc: "glibc" },
  { target: "x86_64-apple-darwin", platform: "darwin-x64", os: "darwin", cpu: "x64" },
  { target: "aarch64-apple-darwin", platform: "darwin-arm64", os: "darwin", cpu: "arm64" },
];

function die(msg) {
  process.stderr.write(`npm-wrapper/build.mjs: error: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const opts = { dist: path.resolve(here, "..", "dist"), version: "", out: "", repository: "", pack: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) die(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--dist") opts.dist = path.resolve(value());
    else if (a === "--version") opts.version = value().replace(/^v/, "");
    else if (a === "--out") opts.out = path.resolve(value());
    else if (a === "--repository") opts.repository = value().replace(/\/+$/, "");
    else if (a === "--pack") opts.pack = true;
    else if (a === "-h" || a === "--help") {
      const header = fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").slice(1, 11);
      process.stdout.write(header.map((l) => l.replace(/^\/\/ ?/, "")).join("\n") + "\n");
      process.exit(0);
    } else die(`unknown argument: ${a}`);
  }
  if (!opts.version) {
    const manifest = path.join(opts.dist, "latest", "manifest.json");
    if (!fs.existsSync(manifest)) die(`no --version and no ${manifest}`);
    opts.version = JSON.parse(fs.readFileSync(manifest, "utf8")).version;
  }
  if (!/^[0-9][0-9A-Za-z.+-]*$/.test(opts.version)) die(`not a valid version: ${opts.version}`);
  if (!opts.out) opts.out = path.join(opts.dist, "npm");
  return opts;
}

function sha256(file) {
  return createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

function writeJson(file, value) {
  fs.writeFileSync(file, JSON.stringify(value, null, 2) + "\n");
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const vdir = path.join(opts.dist, opts.version);
  const sumsFile = path.join(vdir, "SHA256SUMS");
  if (!fs.existsSync(sumsFile)) die(`no ${sumsFile}: build the release tree with scripts/dist first`);
  const sums = new Map();
  for (const line of fs.readFileSync(sumsFile, "utf8").split("\n")) {
    const m = line.match(/^([0-9a-f]{64})\s+\*?(\S+)$/);
    if (m) sums.set(m[2], m[1]);
  }

  const mainSrc = path.join(here, MAIN);
  const mainTemplate = JSON.parse(fs.readFileSync(path.join(mainSrc, "package.json"), "utf8"));
  const launcher = fs.readFileSync(path.join(mainSrc, "bin", "breadboard.js"), "utf8");
  const repository = opts.repository ? { repository: { type: "git", url: `git+${opts.repository}.git` } } : {};
  fs.mkdirSync(opts.out, { recursive: true });

  const built = new Map(); // platform -> package name
  for (const t of TARGETS) {
    if (built.has(t.platform)) continue; // the preferred build for this platform is already in
    const name = `breadboard-${opts.version}-${t.target}.tar.gz`;
    const tarball = path.join(vdir, name);
    if (!fs.existsSync(tarball)) continue;
    const expected = sums.get(name);
    if (!expected) die(`${name} is not listed in ${sumsFile}`);
    const actual = sha256(tarball);
    if (actual !== expected) die(`checksum mismatch for ${name}: expected ${expected}, got ${actual}`);

    const pkgName = `${MAIN}-${t.platform}`;
    // The launcher looks platform packages up in its own table: a package it does not know would never run.
    if (!launcher.includes(`"${t.platform}": "${pkgName}"`)) {
      die(`npm-wrapper/${MAIN}/bin/breadboard.js has no entry "${t.platform}": "${pkgName}" in PLATFORM_PACKAGES`);
    }
    const dir = path.join(opts.out, pkgName);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(path.join(dir, "bin"), { recursive: true });
    execFileSync("tar", ["-xzf", tarball, "-C", path.join(dir, "bin"), "breadboard"], { stdio: "inherit" });
    fs.chmodSync(path.join(dir, "bin", "breadboard"), 0o755);
    const pj = {
      name: pkgName,
      version: opts.version,
      description: `The breadboard binary for ${t.platform} (${t.target}); installed through ${MAIN}`,
      license: mainTemplate.license,
      ...repository,
      os: [t.os],
      cpu: [t.cpu],
      ...(t.libc ? { libc: [t.libc] } : {}),
      preferUnplugged: true,
      files: ["bin/breadboard"],
    };
    writeJson(path.join(dir, "package.json"), pj);
    fs.writeFileSync(
      path.join(dir, "README.md"),
      `# ${pkgName}\n\nThe \`breadboard\` binary for ${t.platform} (${t.target}). Install \`${MAIN}\` instead: it picks this package.\n`,
    );
    built.set(t.platform, pkgName);
    process.stderr.write(`built ${pkgName}@${opts.version} from ${name}\n`);
  }
  if (built.size === 0) die(`no breadboard-${opts.version}-<target>.tar.gz for a known target in ${vdir}`);

  const mainDir = path.join(opts.out, MAIN);
  fs.rmSync(mainDir, { recursive: true, force: true });
  fs.mkdirSync(path.join(mainDir, "bin"), { recursive: true });
  fs.copyFileSync(path.join(mainSrc, "bin", "breadboard.js"), path.join(mainDir, "bin", "breadboard.js"));
  fs.chmodSync(path.join(mainDir, "bin", "breadboard.js"), 0o755);
  fs.copyFileSync(path.join(mainSrc, "README.md"), path.join(mainDir, "README.md"));
  const optionalDependencies = {};
  for (const name of [...built.values()].sort()) optionalDependencies[name] = opts.version; // exact versions
  writeJson(path.join(mainDir, "package.json"), {
    ...mainTemplate,
    ...repository,
    version: opts.version,
    optionalDependencies,
  });
  process.stderr.write(`built ${MAIN}@${opts.version} (optionalDependencies: ${Object.keys(optionalDependencies).join(", ")})\n`);

  const dirs = [...built.values()].sort().map((n) => path.join(opts.out, n)).concat([mainDir]);
  for (const dir of dirs) {
    if (opts.pack) {
      const out = execFileSync("npm", ["pack", "--silent", "--pack-destination", opts.out], { cwd: dir, encoding: "utf8" });
      const file = out.trim().split("\n").pop();
      process.stdout.write(path.join(opts.out, file) + "\n");
    } else {
      process.stdout.write(dir + "\n");
    }
  }
}

main();
