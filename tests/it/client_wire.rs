//! The client's wire types (src/client/wire.rs) against the engine's own description of the protocol: the golden
//! corpus of real engine output (engine/tests/golden/*.jsonl) and the committed JSON Schema generated from the
//! engine's models (docs/protocol.schema.json). No engine runs here. The engine's tests keep the corpus and the schema
//! true to the engine; these keep the client true to both, so a renamed field fails CI instead of reading as "".

use std::collections::HashMap;
use std::path::PathBuf;

use breadboard::client::wire::{
    CommandAnswer, CommandDetail, Created, Envelope, ErrorBody, Event, Head, Health, Incoming,
    Summary, ACTED_ON,
};
use serde::Serialize;
use serde_json::Value;

fn repo_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn golden(name: &str) -> Vec<String> {
    repo_file(&format!("engine/tests/golden/{name}"))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Each answer of the corpus: (schema definition, body). Every line also comes back byte for byte through
/// `serde_json::Value`, the type `sessions list|show --json` print answers with (keys in the engine's order needs
/// serde_json's `preserve_order`, a dev-dependency feature here: see Cargo.toml).
fn golden_answers() -> Vec<(String, Value)> {
    let mut lines = golden("responses.jsonl");
    lines.extend(golden("errors.jsonl"));
    lines
        .iter()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            assert_eq!(&serde_json::to_string(&record).unwrap(), line);
            let schema = record["schema"].as_str().unwrap().to_owned();
            (schema, record["body"].clone())
        })
        .collect()
}

fn schema() -> Value {
    serde_json::from_str(&repo_file("docs/protocol.schema.json")).unwrap()
}

#[test]
fn every_golden_event_decodes_and_encodes_back_to_the_engine_s_bytes() {
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut passed_through = 0;
    let lines = golden("events.jsonl");
    assert!(lines.len() > 10, "the corpus is there");
    for line in &lines {
        let env: Envelope = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(&serde_json::to_string(&env).unwrap(), line);
        // What a stream is triaged by, read alone, agrees with the whole envelope.
        let head: Head = serde_json::from_str(line).unwrap();
        assert_eq!((head.seq, head.kind.as_ref()), (env.seq, env.kind.as_ref()));
        let incoming = Incoming {
            seq: head.seq,
            kind: head.kind,
            raw: line,
        };
        assert_eq!(incoming.event(), env.event(), "{line}");
        let raw: Value = serde_json::from_str(line).unwrap();
        let session = env
            .session_id
            .clone()
            .expect("every stored event names its session")
            .into_owned();
        let seq = env.seq.expect("the engine numbers every stored event");
        assert_eq!(seq, last_seq.get(&session).map_or(1, |s| s + 1), "{line}");
        last_seq.insert(session, seq);
        // The values, not just the decode: a renamed payload field would default quietly.
        let text = |k: &str| raw["payload"][k].as_str().unwrap().to_owned();
        match (env.kind.as_ref(), env.event()) {
            ("user_message", Event::UserMessage { text: t })
            | ("assistant_delta", Event::AssistantDelta { text: t })
            | ("assistant_message", Event::AssistantMessage { text: t }) => {
                assert_eq!(t, text("text"), "{line}")
            }
            ("error", Event::Error { message }) => assert_eq!(message, text("message"), "{line}"),
            ("run_finished", Event::RunFinished { completed, reason }) => assert_eq!(
                (completed, reason),
                (
                    raw["payload"]["completed"].as_bool().unwrap(),
                    text("reason")
                ),
                "{line}"
            ),
            (kind, Event::Other) if !ACTED_ON.contains(&kind) => passed_through += 1,
            (kind, event) => panic!("{kind} decoded as {event:?}: {line}"),
        }
    }
    assert!(
        passed_through > 0,
        "the corpus has types the client only passes through"
    );
    for kind in ACTED_ON {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!(r#""type":"{kind}""#))),
            "the corpus has no {kind} event to check the client's reading of"
        );
    }
}

#[test]
fn every_golden_answer_decodes_into_the_client_type_that_reads_it() {
    for (schema, body) in golden_answers() {
        let s = |v: &Value| v.as_str().unwrap().to_owned();
        match schema.as_str() {
            "Health" => {
                let h: Health = serde_json::from_value(body.clone()).unwrap();
                assert_eq!(
                    (h.protocol_version, h.engine_version, h.instance_id, h.pid),
                    (
                        s(&body["protocol_version"]),
                        s(&body["engine_version"]),
                        s(&body["instance_id"]),
                        body["pid"].as_i64().unwrap()
                    )
                );
            }
            "CreateSessionResponse" => {
                let c: Created = serde_json::from_value(body.clone()).unwrap();
                assert_eq!(
                    (c.session_id, c.status),
                    (s(&body["session_id"]), s(&body["status"]))
                );
            }
            "SessionSummary" => check_summary(&body),
            "SessionList" => body.as_array().unwrap().iter().for_each(check_summary),
            "CommandResponse" => {
                let c: CommandAnswer = serde_json::from_value(body.clone()).unwrap();
                assert_eq!(c.detail.stopped, body["detail"]["stopped"].as_bool());
            }
            "ErrorBody" | "ResumeWindowExceededBody" => {
                let e: ErrorBody = serde_json::from_value(body.clone()).unwrap();
                assert_eq!(e.error, s(&body["error"]));
                assert!(!e.detail_text().is_empty(), "{body}");
                assert_eq!(e.last_seq, body["last_seq"].as_u64());
                if schema == "ResumeWindowExceededBody" {
                    assert!(e.last_seq.is_some(), "{body}");
                }
            }
            // Answers the client does not read (it needs only their status code).
            "VersionInfo" | "Ready" | "Status" | "InputResponse" | "ShutdownResponse" => {}
            other => {
                panic!("the golden answer {other} has no client type: decide which one reads it")
            }
        }
    }
}

fn check_summary(body: &Value) {
    let summary: Summary = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(summary.session_id, body["session_id"].as_str().unwrap());
    assert_eq!(summary.status, body["status"].as_str().unwrap());
    assert_eq!(summary.last_seq, body["last_seq"].as_u64().unwrap());
    assert_eq!(
        summary.last_activity_at.as_deref(),
        body["last_activity_at"].as_str()
    );
    assert_eq!(summary.provider.as_deref(), body["provider"].as_str());
    assert_eq!(summary.model.as_deref(), body["model"].as_str());
    assert_eq!(summary.metadata, body["metadata"]);
}

/// Where `value` does not fit `node` of the schema: every key an object has must be a property the schema names (a
/// free-form object, one without `properties`, takes any), with a type the schema allows there. This is no JSON
/// Schema validator (the engine's tests validate with a real one): it checks what the client's types write.
fn misfits(defs: &Value, node: &Value, value: &Value, at: &str) -> Vec<String> {
    if let Some(r) = node.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("local refs only");
        return misfits(defs, &defs[name], value, at);
    }
    if let Some(branches) = node.get("anyOf").and_then(Value::as_array) {
        let tried: Vec<Vec<String>> = branches
            .iter()
            .map(|b| misfits(defs, b, value, at))
            .collect();
        return match tried.iter().find(|m| m.is_empty()) {
            Some(_) => Vec::new(),
            None => tried.concat(),
        };
    }
    if let Some(want) = node.get("const") {
        if want != value {
            return vec![format!("{at}: {value} where the schema has {want}")];
        }
    }
    let fits = |t: &str| match t {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        other => panic!("schema type {other}"),
    };
    match node.get("type") {
        Some(Value::String(t)) if !fits(t) => return vec![format!("{at}: {value} is not {t}")],
        Some(Value::Array(ts)) if !ts.iter().any(|t| fits(t.as_str().unwrap())) => {
            return vec![format!("{at}: {value} is none of {ts:?}")]
        }
        _ => {}
    }
    let mut out = Vec::new();
    if let (Some(object), Some(props)) = (value.as_object(), node.get("properties")) {
        for (key, v) in object {
            match props.get(key) {
                Some(p) => out.extend(misfits(defs, p, v, &format!("{at}.{key}"))),
                None => out.push(format!("{at}.{key}: not in the schema")),
            }
        }
    }
    if let (Some(items), Some(schema)) = (value.as_array(), node.get("items")) {
        for (i, v) in items.iter().enumerate() {
            out.extend(misfits(defs, schema, v, &format!("{at}[{i}]")));
        }
    }
    out
}

/// What a client type writes (or, for a type it reads, the fields it reads) fits the schema's `def`.
fn assert_fits(defs: &Value, def: &str, value: &impl Serialize) {
    let value = serde_json::to_value(value).unwrap();
    let node = defs
        .get(def)
        .unwrap_or_else(|| panic!("the schema has no {def}"));
    let bad = misfits(defs, node, &value, def);
    assert!(
        bad.is_empty(),
        "{def} as the client has it, {value}: {bad:#?}"
    );
}

/// A request must also carry everything the engine requires.
fn assert_request(defs: &Value, def: &str, value: &impl Serialize) {
    assert_fits(defs, def, value);
    let written = serde_json::to_value(value).unwrap();
    for key in defs[def]["required"].as_array().into_iter().flatten() {
        let key = key.as_str().unwrap();
        assert!(
            written.get(key).is_some(),
            "{def} needs {key}; the client's type leaves it out: {written}"
        );
    }
}

#[test]
fn every_field_the_client_reads_or_writes_is_in_the_schema_with_its_type() {
    let schema = schema();
    let defs = &schema["$defs"];
    // One definition of "1.0": what the handshake compares is what the engine's models say.
    assert_eq!(
        defs["ProtocolVersion"]["const"],
        breadboard::compat::PROTOCOL_VERSION
    );

    // Requests: every field, and every required one.
    let create = breadboard::client::wire::CreateSession {
        task: "hello",
        provider: Some("echo"),
        metadata: serde_json::json!({"cli_session_kind": "oneshot", "model": "m"}),
    };
    assert_request(defs, "CreateSessionRequest", &create);
    assert_request(
        defs,
        "InputRequest",
        &breadboard::client::wire::Input {
            content: "hi",
            input_id: Some("0123abcd"),
        },
    );
    assert_fits(
        defs,
        "InputResponse",
        &breadboard::client::wire::InputAnswer {
            status: "accepted".into(),
            input_id: Some("0123abcd".into()),
        },
    );
    let stop = breadboard::client::wire::Command {
        command: "stop",
        payload: serde_json::json!({}),
    };
    assert_request(defs, "CommandRequest", &stop);

    // Answers: each type, filled from the corpus (so optional fields are set where the engine sets them) and from
    // its defaults (so a field the corpus happens to leave out is checked too).
    for (def, body) in golden_answers() {
        match def.as_str() {
            "Health" => assert_fits(defs, &def, &serde_json::from_value::<Health>(body).unwrap()),
            "CreateSessionResponse" => assert_fits(
                defs,
                &def,
                &serde_json::from_value::<Created>(body).unwrap(),
            ),
            "SessionSummary" => assert_fits(
                defs,
                &def,
                &serde_json::from_value::<Summary>(body).unwrap(),
            ),
            "CommandResponse" => assert_fits(
                defs,
                &def,
                &serde_json::from_value::<CommandAnswer>(body).unwrap(),
            ),
            "ErrorBody" | "ResumeWindowExceededBody" => assert_fits(
                defs,
                &def,
                &serde_json::from_value::<ErrorBody>(body).unwrap(),
            ),
            _ => {}
        }
    }
    let full_summary = Summary {
        session_id: "s".into(),
        last_activity_at: Some("t".into()),
        provider: Some("echo".into()),
        model: Some("m".into()),
        metadata: serde_json::json!({}),
        ..Default::default()
    };
    assert_fits(defs, "SessionSummary", &full_summary);
    let detail = CommandDetail {
        stopped: Some(true),
        closed: Some(true),
    };
    assert_fits(defs, "CommandResponse", &CommandAnswer { detail });
    let resume = ErrorBody {
        error: "resume_window_exceeded".into(),
        detail: "gone".into(),
        last_seq: Some(3),
    };
    assert_fits(defs, "ResumeWindowExceededBody", &resume);

    // Events: the envelope against `Event`, and each payload the client reads against that type's payload in
    // `KnownEvent` (an unknown type's payload is not the client's business).
    let mapping = &defs["KnownEvent"]["discriminator"]["mapping"];
    for line in golden("events.jsonl") {
        let env: Envelope = serde_json::from_str(&line).unwrap();
        assert_fits(defs, "Event", &env);
        let Some(read) = env.read_payload() else {
            continue;
        };
        let event_def = mapping[env.kind.as_ref()]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "the client reads {} events; the schema has no such type",
                    env.kind
                )
            })
            .strip_prefix("#/$defs/")
            .unwrap();
        let bad = misfits(
            defs,
            &defs[event_def]["properties"]["payload"],
            &read,
            &env.kind,
        );
        assert!(
            bad.is_empty(),
            "{} payload as the client reads it, {read}: {bad:#?}",
            env.kind
        );
    }
}
