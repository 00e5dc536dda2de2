//! The `geonfs` binary as an operator runs it.

// A failed `unwrap` is how a test reports what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const GOOD: &str = r#"
[cluster]
name = "t"
replication_factor = 2
secret = "0123456789abcdef0123"

[tls]
insecure = true

[[site]]
name = "a"
subnets = ["127.1.0.0/16"]

[[site]]
name = "b"
subnets = ["127.2.0.0/16"]

[[node]]
name = "a-core-1"
address = "127.1.0.11:7100"
roles = ["core", "meta"]
data_dir = "/var/lib/geonfs/a1"
capacity = "1GiB"

[[node]]
name = "a-core-2"
address = "127.1.0.12:7100"
roles = ["core"]
data_dir = "/var/lib/geonfs/a2"
capacity = "1GiB"

[[node]]
name = "b-core-1"
address = "127.2.0.11:7100"
roles = ["core"]
data_dir = "/var/lib/geonfs/b1"
capacity = "1GiB"

[[node]]
name = "b-core-2"
address = "127.2.0.12:7100"
roles = ["core", "access"]
data_dir = "/var/lib/geonfs/b2"
capacity = "1GiB"

[nfs]
allowed_clients = ["10.9.0.0/16"]
"#;

/// Runs `geonfs ARGS`: success, and stdout then stderr.
fn geonfs(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_geonfs"))
        .args(args)
        .output()
        .expect("run geonfs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn check_config(path: &Path) -> (bool, String) {
    geonfs(&["check-config", &path.display().to_string()])
}

/// Writes a config file only its owner may read (it holds the secret).
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn check_config_accepts_the_template_once_its_secret_is_set_and_a_good_config() {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../geonfs.example.toml");
    let template = std::fs::read_to_string(template).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // As shipped, its problems are the placeholder secret and the cluster
    // CA nobody made yet.
    let (ok, text) = check_config(&write(dir.path(), "example.toml", &template));
    assert!(!ok, "{text}");
    assert!(
        text.contains("cluster.secret: the secret is the template's placeholder"),
        "{text}"
    );
    assert!(
        text.contains("tls.dir: cannot read the cluster CA"),
        "{text}"
    );
    assert!(text.contains(": 2 problem(s)"), "{text}");
    let placeholder = "change-me-to-a-long-random-string";
    assert!(template.contains(placeholder));
    let tls = dir.path().join("tls");
    let set = template
        .replace(placeholder, "3f0c1e29a7d84b6e9c05f1a2b3c4d5e6")
        .replace(
            "\"/etc/geonfs/tls\"",
            &format!("{:?}", tls.display().to_string()),
        );
    let (ok, text) = geonfs(&["cert", "init", "--dir", &tls.display().to_string()]);
    assert!(ok, "{text}");
    let set = write(dir.path(), "set.toml", &set);
    let (ok, text) = check_config(&set);
    assert!(ok, "{text}");
    assert!(text.contains("ok: cluster \"example\", 3 sites"), "{text}");
    // A certificate per node and one for the operator's commands; a
    // second CA in the same place is refused.
    let (ok, text) = geonfs(&["cert", "issue", "--config", &set.display().to_string()]);
    assert!(ok, "{text}");
    assert_eq!(text.lines().count(), 16, "{text}");
    assert!(tls.join("a-core-1.key").exists() && tls.join("operator.crt").exists());
    let (ok, text) = geonfs(&[
        "cert",
        "issue",
        "-c",
        &set.display().to_string(),
        "a-core-1",
    ]);
    assert!(!ok && text.contains("already exists"), "{text}");
    let (ok, text) = geonfs(&["cert", "issue", "-c", &set.display().to_string(), "nobody"]);
    assert!(!ok && text.contains("neither a node"), "{text}");
    let (ok, text) = geonfs(&["cert", "init", "--dir", &tls.display().to_string()]);
    assert!(!ok && text.contains("already exists"), "{text}");

    let (ok, text) = check_config(&write(dir.path(), "good.toml", GOOD));
    assert!(ok, "{text}");
    assert!(
        text.contains("2 sites, 4 nodes (4 core, 1 meta, 1 access), n = 2"),
        "{text}"
    );
}

#[test]
fn check_config_gives_a_precise_message_per_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    // (what is broken, the edit, the message it must give)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "overlapping subnets",
            r#"subnets = ["127.2.0.0/16"]"#,
            r#"subnets = ["127.1.128.0/17"]"#,
            "site[1].subnets[0]: subnet 127.1.128.0/17 overlaps 127.1.0.0/16",
        ),
        (
            "node in no site",
            "127.2.0.12:7100",
            "10.9.0.1:7100",
            "node[3].address: 10.9.0.1 is in no site's subnets",
        ),
        (
            "n larger than the sites",
            "replication_factor = 2",
            "replication_factor = 3",
            "cluster.replication_factor: 3 is larger than the number of sites (2)",
        ),
        (
            "writing site with one core",
            "roles = [\"core\", \"access\"]",
            "roles = [\"access\"]",
            "takes writes but has 1 core server (needs at least 2)",
        ),
        (
            "duplicate node name",
            "name = \"a-core-2\"",
            "name = \"a-core-1\"",
            "node[1].name: duplicate node name \"a-core-1\"",
        ),
        (
            "duplicate address",
            "127.1.0.12:7100",
            "127.1.0.11:7100",
            "node[1].address: duplicate address 127.1.0.11:7100",
        ),
        (
            "unknown key",
            "capacity = \"1GiB\"\n\n[[node]]\nname = \"b-core-1\"",
            "capacty = \"1GiB\"\n\n[[node]]\nname = \"b-core-1\"",
            "node[1].capacty: unknown key",
        ),
        (
            "nobody allowed to mount",
            "allowed_clients = [\"10.9.0.0/16\"]",
            "allowed_clients = []",
            "nfs.allowed_clients: missing or empty: list the subnets",
        ),
        (
            "no_root_squash without root_squash",
            "allowed_clients = [\"10.9.0.0/16\"]",
            "allowed_clients = [\"10.9.0.0/16\"]\nroot_squash = false\nno_root_squash = [\"10.9.0.0/16\"]",
            "nfs.no_root_squash: has no effect with root_squash = false",
        ),
        (
            "unparseable size",
            "block_size",
            "block_size = \"12 XB\"\n#",
            "cluster.block_size: cannot parse \"12 XB\" as a size",
        ),
    ];
    let mut messages = Vec::new();
    for (index, (what, from, to, expected)) in cases.iter().enumerate() {
        let text = if *from == "block_size" {
            GOOD.replace("secret =", &format!("{to}\nsecret ="))
        } else {
            assert!(GOOD.contains(from), "case {what}: the edit must apply");
            GOOD.replacen(from, to, 1)
        };
        let path = write(dir.path(), &format!("broken-{index}.toml"), &text);
        let (ok, output) = check_config(&path);
        assert!(!ok, "case {what}: must exit non-zero:\n{output}");
        assert!(
            output.contains(expected),
            "case {what}: expected {expected:?} in:\n{output}"
        );
        messages.push(output);
    }
    messages.sort();
    messages.dedup();
    assert_eq!(
        messages.len(),
        cases.len(),
        "every broken config gets its own message"
    );
}

#[test]
fn check_config_refuses_a_secret_others_may_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let readable = std::fs::Permissions::from_mode(0o644);
    // An inline secret in a world-readable config file.
    let path = write(dir.path(), "open.toml", GOOD);
    std::fs::set_permissions(&path, readable.clone()).unwrap();
    let (ok, text) = check_config(&path);
    assert!(!ok, "{text}");
    assert!(
        text.contains("cluster.secret: ")
            && text.contains("may be read by group or others (mode 644)"),
        "{text}"
    );
    // A secret_file others may read; once private, accepted.
    let secret = write(dir.path(), "secret", "0123456789abcdef0123\n");
    std::fs::set_permissions(&secret, readable).unwrap();
    let text = GOOD.replace(
        "secret = \"0123456789abcdef0123\"",
        "secret_file = \"secret\"",
    );
    let path = write(dir.path(), "file.toml", &text);
    let (ok, output) = check_config(&path);
    assert!(!ok, "{output}");
    assert!(
        output.contains("cluster.secret_file: ") && output.contains("`chmod 600` it"),
        "{output}"
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, output) = check_config(&path);
    assert!(ok, "{output}");
}

#[test]
fn check_config_reports_a_missing_file_and_bad_toml() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = check_config(&dir.path().join("absent.toml"));
    assert!(!ok);
    assert!(text.contains("absent.toml"), "{text}");
    let (ok, text) = check_config(&write(dir.path(), "bad.toml", "[cluster\nname = 1"));
    assert!(!ok);
    assert!(
        text.contains("line"),
        "names where the syntax error is: {text}"
    );
}
