//! Test certificates, made at test time with the `openssl` command (`just deps` installs
//! it): a private CA, and certificates it signs for a server on 127.0.0.1 or for a client.

use std::path::Path;
use std::process::Command;

/// What a server certificate of the tests is valid for.
pub const SERVER_EXT: &str =
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n";
/// What a client certificate of the tests is valid for.
pub const CLIENT_EXT: &str = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}); run `just deps`"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA in `dir`: `ca.crt` and `ca.key`.
pub fn make_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=llmchat test CA",
        ],
    );
}

/// `{name}.crt` and `{name}.key` in `dir`, for common name `cn` with the extensions `ext`
/// ([`SERVER_EXT`], [`CLIENT_EXT`]), signed by the CA of [`make_ca`] in the same folder.
pub fn make_signed(dir: &Path, name: &str, cn: &str, ext: &str) {
    let (key, csr, crt, ext_file) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    std::fs::write(dir.join(&ext_file), ext).expect("writing the extensions file");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext_file,
        ],
    );
}

/// A CA, a server certificate for 127.0.0.1 (`server.crt`, `server.key`) and a client
/// certificate (`client.crt`, `client.key`), all signed by the CA.
pub fn make_certificates(dir: &Path) {
    make_ca(dir);
    make_signed(dir, "server", "llmchat test server", SERVER_EXT);
    make_signed(dir, "client", "llmchat test client", CLIENT_EXT);
}
