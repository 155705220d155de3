//! Tests of the settings: defaults, layers, validation, and the README table.

use super::*;

fn resolve(args: &[&str], env: &[&str]) -> Result<Resolved, ConfigError> {
    Config::resolve(
        args.iter().map(OsString::from),
        env.iter().map(|s| s.to_string()),
    )
}

fn temp_toml(tag: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("livedash-config-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn defaults_are_the_declared_ones() {
    let c = Config::defaults().unwrap();
    assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
    assert_eq!(c.max_body_bytes, 16 * 1024 * 1024);
    assert_eq!(c.call_timeout_ms, 10_000);
    assert_eq!(c.ingest_token, None);
    assert!(c.allowed_origins.is_empty());
    assert!(!c.demo);
    c.check().unwrap();
}

#[test]
fn unknown_toml_key_is_named_with_the_closest() {
    let err = Config::toml_to_args("listen = \"127.0.0.1:1\"\nmax_bodybytes = 3\nshardz = 2\n")
        .unwrap_err();
    assert!(
        err.contains("max_bodybytes") && err.contains("max_body_bytes"),
        "{err}"
    );
    // Every unknown key is named, not only the first.
    assert!(err.contains("shardz (did you mean shards?)"), "{err}");
    assert!(Config::toml_to_args("config = \"x\"\n").is_err());
}

#[test]
fn toml_values_of_every_kind() {
    let args = Config::toml_to_args(
        "shards = 3\nadmin_token = \"s3cret\"\ndemo = true\nallowed_origins = [\"http://a\", \"http://b\"]\n",
    )
    .unwrap();
    assert_eq!(args["shards"], "--shards=3");
    assert_eq!(args["demo"], "--demo");
    assert_eq!(
        args["allowed_origins"],
        "--allowed-origins=http://a,http://b"
    );
    assert!(Config::toml_to_args("shards = { a = 1 }\n").is_err());
}

#[test]
fn layers_override_in_order() {
    let file = temp_toml(
        "layers",
        "shards = 3\nmax_body_bytes = 10\nhistory_len = 7\n",
    );
    let path = file.to_str().unwrap();
    let r = resolve(&["livedash", "--config", path, "--shards", "2"], &[]).unwrap();
    let c = r.config;
    assert_eq!((c.shards, c.max_body_bytes, c.history_len), (2, 10, 7));
    assert!(r.warnings.is_empty());
    std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
}

#[test]
fn a_bad_file_value_names_the_file() {
    let file = temp_toml("bad", "shards = \"many\"\n");
    let err = resolve(&["livedash", "--config", file.to_str().unwrap()], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("config file") && err.contains("many"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
}

#[test]
fn unknown_env_is_a_warning_naming_the_closest() {
    let r = resolve(
        &["livedash"],
        &["PATH", "LIVEDASH_SHARD", "LIVEDASH_BIN", "LIVEDASH_LOG"],
    )
    .unwrap();
    assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    assert!(
        r.warnings[0].contains("LIVEDASH_SHARD") && r.warnings[0].contains("LIVEDASH_SHARDS"),
        "{:?}",
        r.warnings
    );
    assert!(r.warnings[1].contains("LIVEDASH_BIN"), "{:?}", r.warnings);
}

#[test]
fn a_node_beyond_loopback_without_tokens_is_warned_about() {
    let mut c = Config::defaults().unwrap();
    assert!(c.exposure_warnings().is_empty());
    c.listen = SocketAddr::from(([0, 0, 0, 0], 8080));
    c.admin_token = Some("a".into());
    let warnings = c.exposure_warnings();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].contains("allowed_hosts"), "{warnings:?}");
    assert!(warnings[1].contains("ingest_token"), "{warnings:?}");
    // Names listed: only the tokens are left to warn about.
    c.allowed_hosts = vec!["dash.example.com".into()];
    assert_eq!(c.exposure_warnings().len(), 2);
}

#[test]
fn known_env_comes_from_the_flags() {
    let known = Config::known_env();
    assert!(known.contains(&"LIVEDASH_CALL_TIMEOUT_MS".to_string()));
    assert!(known.contains(&"LIVEDASH_LOG".to_string()));
    assert!(known.contains(&"LIVEDASH_LOG_FORMAT".to_string()));
    assert_eq!(known.len(), Config::toml_keys().len() + 3);
}

#[test]
fn bad_values_are_refused_by_key_in_one_line() {
    for (args, key) in [
        (vec!["livedash", "--max-body-bytes", "0"], "max_body_bytes"),
        (vec!["livedash", "--admin-token", ""], "admin_token"),
        (
            vec!["livedash", "--stream-send-buffer-bytes", "100"],
            "stream_send_buffer_bytes",
        ),
        (vec!["livedash", "--shards", "65"], "shards"),
        (
            vec!["livedash", "--call-timeout-ms", "0"],
            "call_timeout_ms",
        ),
    ] {
        let err = resolve(&args, &[]).unwrap_err().to_string();
        assert!(err.starts_with(key), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let err = resolve(&["livedash", "--shards", "x"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--shards"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// The README's settings table lists every setting.
#[test]
fn readme_lists_every_setting() {
    let readme = include_str!("../../../README.md");
    for key in Config::toml_keys() {
        assert!(
            readme.contains(&format!("`{key}`")),
            "README does not list `{key}`"
        );
    }
}
