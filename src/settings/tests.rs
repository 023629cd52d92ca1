use std::path::{Path, PathBuf};

use super::*;

const FILE: &str = "/h/config.toml";

fn config(text: &str) -> Config {
    toml::from_str(text).unwrap()
}

fn resolve(flags: &Flags, env: &[(&str, &str)], config: &Config) -> Settings {
    let source = ConfigSource {
        config,
        file: Path::new(FILE),
    };
    Settings::resolve(flags, &Env::fixed(env), source, Path::new("/h"))
}

fn at(key: &str) -> Origin {
    Origin::Config {
        file: PathBuf::from(FILE),
        key: key.to_owned(),
    }
}

fn port(s: &Settings) -> String {
    s.port.get().unwrap().to_string()
}

#[test]
fn flag_beats_env_beats_config_beats_default() {
    let cfg = config(
        "[engine]\nport = 9300\n[python]\npath = \"/cfg/python\"\n[protocol]\nmode = \"soft\"\n",
    );
    let env = [
        ("BREADBOARD_CLI_PORT", "9200"),
        ("BREADBOARD_PYTHON", "/env/python"),
    ];
    let flags = Flags {
        port: Some(PortSpec::Fixed(9100)),
        python: Some(PathBuf::from("/flag/python")),
        ..Flags::default()
    };

    let s = resolve(&flags, &env, &cfg);
    assert_eq!(
        (port(&s), &s.port.origin),
        ("9100".into(), &Origin::Flag("--port".into()))
    );
    assert_eq!(
        s.python.get().unwrap().as_deref(),
        Some(Path::new("/flag/python"))
    );
    assert_eq!(s.python.origin.to_string(), "flag --python");

    let s = resolve(&Flags::default(), &env, &cfg);
    assert_eq!(
        (port(&s), s.port.origin.to_string()),
        ("9200".into(), "env BREADBOARD_CLI_PORT".into())
    );
    assert_eq!(s.python.origin, Origin::Env("BREADBOARD_PYTHON".into()));

    let s = resolve(&Flags::default(), &[], &cfg);
    assert_eq!(
        (port(&s), &s.port.origin),
        ("9300".into(), &at("engine.port"))
    );
    assert_eq!(
        s.port.origin.to_string(),
        "config /h/config.toml:engine.port"
    );
    assert_eq!(*s.protocol.get().unwrap(), ProtocolMode::Soft);
    assert_eq!(s.protocol.origin, at("protocol.mode"));

    let s = resolve(&Flags::default(), &[], &Config::default());
    assert_eq!(
        (port(&s), &s.port.origin),
        ("9099".into(), &Origin::Default)
    );
    assert_eq!(
        (s.python.get().unwrap(), &s.python.origin),
        (&None, &Origin::Default)
    );
    assert_eq!(*s.protocol.get().unwrap(), ProtocolMode::Strict);
    assert_eq!(s.restart.get().unwrap(), &"no");
    assert_eq!(*s.lock_timeout.get().unwrap(), DEFAULT_LOCK_TIMEOUT);
}

#[test]
fn an_empty_env_var_counts_as_unset() {
    let cfg = config("[engine]\nport = 9300\ninstaller = \"pip\"\n");
    let env = [
        ("BREADBOARD_CLI_PORT", ""),
        ("BREADBOARD_INSTALLER", ""),
        ("BREADBOARD_LOCK_TIMEOUT", ""),
        ("BREADBOARD_URL", ""),
    ];
    let s = resolve(&Flags::default(), &env, &cfg);
    assert_eq!(
        (port(&s), &s.port.origin),
        ("9300".into(), &at("engine.port"))
    );
    assert_eq!(*s.installer.get().unwrap(), Some(InstallerKind::Pip));
    assert_eq!(s.installer.origin, at("engine.installer"));
    assert_eq!(s.lock_timeout.origin, Origin::Default);
    assert_eq!(
        (s.client_url.get().unwrap(), &s.client_url.origin),
        (&None, &Origin::Default)
    );
}

#[test]
fn the_home_is_breadboard_home_else_under_home() {
    let home = |vars: &[(&str, &str)]| requested_home(&Env::fixed(vars));
    assert_eq!(
        home(&[("BREADBOARD_HOME", ""), ("HOME", "/u")]),
        Some((PathBuf::from("/u/.breadboard"), Origin::Default))
    );
    assert_eq!(
        home(&[("BREADBOARD_HOME", "/b"), ("HOME", "/u")]),
        Some((PathBuf::from("/b"), Origin::Env("BREADBOARD_HOME".into())))
    );
    assert_eq!(home(&[("HOME", "")]), None);
}

#[test]
fn a_bad_value_is_kept_as_its_error_naming_where_it_is() {
    let cfg = config(
        "[engine]\nrestart = 5\ninstaller = \"conda\"\ncommand = 3\n[protocol]\nmode = \"loose\"\n",
    );
    let s = resolve(&Flags::default(), &[], &cfg);
    for (err, key) in [
        (s.restart.get().unwrap_err(), "engine.restart"),
        (s.installer.get().unwrap_err(), "[engine] installer"),
        (s.engine_command.get().unwrap_err(), "engine.command"),
        (s.protocol.get().unwrap_err(), "protocol.mode"),
    ] {
        assert_eq!(err.kind, ErrorKind::Config, "{}", err.message);
        assert!(
            err.message.contains(key) && err.message.contains("config.toml"),
            "{}",
            err.message
        );
    }
    assert_eq!(s.restart.origin, at("engine.restart"));
    // Read again, the same error: it is kept, not consumed.
    assert_eq!(
        s.restart.get().unwrap_err().hint,
        s.restart.get().unwrap_err().hint
    );
    let listed = s.entries();
    let restart = listed.iter().find(|e| e.key == "engine.restart").unwrap();
    assert!(
        restart.value.starts_with("invalid: engine.restart = 5"),
        "{restart:?}"
    );
    assert_eq!(restart.origin, "config /h/config.toml:engine.restart");

    let s = resolve(&Flags::default(), &[("BREADBOARD_CLI_PORT", "http")], &cfg);
    let err = s.port.get().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(
        err.message.contains("BREADBOARD_CLI_PORT=\"http\""),
        "{}",
        err.message
    );
    let s = resolve(&Flags::default(), &[], &config("[engine]\nport = 0\n"));
    assert!(s
        .port
        .get()
        .unwrap_err()
        .message
        .contains("engine.port = 0"));
}

#[test]
fn a_bad_url_is_a_usage_error_from_the_command_line_and_a_config_error_from_the_file() {
    let cfg = config("[client]\nurl = \"engine:1\"\n");
    let flags = Flags {
        url: Some("ftp://h".into()),
        ..Flags::default()
    };
    let s = resolve(&flags, &[], &cfg);
    assert_eq!(s.client_url.get().unwrap_err().kind, ErrorKind::Usage);
    let s = resolve(&Flags::default(), &[("BREADBOARD_URL", "h:1")], &cfg);
    let err = s.client_url.get().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Usage);
    assert!(
        err.message.starts_with("BREADBOARD_URL is"),
        "{}",
        err.message
    );
    let s = resolve(
        &Flags::default(),
        &[("BREADBOARD_LOCK_TIMEOUT", "soon")],
        &cfg,
    );
    let err = s.client_url.get().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(
        err.message.contains("[client] url in config.toml"),
        "{}",
        err.message
    );
    assert_eq!(s.client_url.origin, at("client.url"));
    assert_eq!(s.lock_timeout.get().unwrap_err().kind, ErrorKind::Config);
}

#[test]
fn a_source_and_the_tls_files_come_from_one_place() {
    let cfg = config(
        "[engine]\nindex_url = \"https://u:secret@idx.example/simple/\"\nssl_certfile = \"c.pem\"\nssl_keyfile = \"/k.pem\"\n",
    );
    let s = resolve(
        &Flags::default(),
        &[("BREADBOARD_FIND_LINKS", "/wheels")],
        &cfg,
    );
    // The env var set alone is the source: the config's index is not mixed in.
    assert_eq!(s.source.get().unwrap().index_url, None);
    assert_eq!(s.source.origin, Origin::Env("BREADBOARD_FIND_LINKS".into()));
    let s = resolve(&Flags::default(), &[], &cfg);
    assert_eq!(s.source.origin, at("engine.index_url"));
    let tls = s.tls.files().unwrap().unwrap();
    assert_eq!(tls, (PathBuf::from("/h/c.pem"), PathBuf::from("/k.pem")));
    let source = s
        .entries()
        .into_iter()
        .find(|e| e.key == "engine.source")
        .unwrap();
    assert_eq!(source.value, "index https://***@idx.example/simple/");

    let flags = Flags {
        ssl_certfile: Some(PathBuf::from("/f.pem")),
        ..Flags::default()
    };
    let s = resolve(&flags, &[], &cfg);
    let err = s.tls.files().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Usage);
    assert!(
        err.message.ends_with("--ssl-certfile and --ssl-keyfile"),
        "{}",
        err.message
    );
}

#[test]
fn a_token_is_never_shown_only_where_it_comes_from() {
    let secret = "tok-3f9a-secret";
    let cfg = config("[client]\nurl = \"https://engine.example:8443\"\ntoken_file = \"tok\"\n");
    let s = resolve(&Flags::default(), &[("BREADBOARD_API_TOKEN", secret)], &cfg);
    assert_eq!(
        s.client_token.origin,
        Origin::Env("BREADBOARD_API_TOKEN".into())
    );
    assert_eq!(s.client_url.origin, at("client.url"));
    let text = format!("{:?} {:?}", s.entries(), s);
    assert!(!text.contains(secret), "{text}");
    assert!(!s.api_token_blank);
    // A blank variable is no token: the config's file is used (the client warns that it ignored it).
    let s = resolve(&Flags::default(), &[("BREADBOARD_API_TOKEN", "  ")], &cfg);
    assert!(s.api_token_blank);
    assert_eq!(
        *s.client_token.get().unwrap(),
        TokenSource::File(PathBuf::from("/h/tok"))
    );
    assert_eq!(s.client_token.origin, at("client.token_file"));
}

#[test]
fn credentials_in_a_url_are_masked() {
    assert_eq!(
        mask_credentials("index http://a:b@h:1/simple/"),
        "index http://***@h:1/simple/"
    );
    assert_eq!(
        mask_credentials("index http://h:1/p@x"),
        "index http://h:1/p@x"
    );
    assert_eq!(mask_credentials("local source /a@b"), "local source /a@b");
}
