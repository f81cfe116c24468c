//! Image names: `NAME[:TAG]` as Docker writes them, `:latest` when no tag is given. Lookups also
//! try the prefixes Podman and Docker add (`localhost/`, `docker.io/library/`), so `busybox`
//! finds an image Podman saved as `localhost/busybox:latest`.

use crate::error::{Error, Result};

/// `name` with its tag (`:latest` if none); checked to be a sane reference.
pub fn normalize(r: &str) -> Result<String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-/:@".contains(c);
    if r.is_empty()
        || r.len() > 255
        || !r.chars().all(ok_char)
        || r.starts_with(['/', ':', '-', '.'])
    {
        return Err(Error::usage(format!(
            "invalid image name {r:?}: use NAME[:TAG] (letters, digits, . _ - / :)"
        )));
    }
    let last = r.rsplit('/').next().unwrap_or(r);
    Ok(if last.contains(':') {
        r.to_string()
    } else {
        format!("{r}:latest")
    })
}

/// (repository, tag) of a normalized name.
pub fn split(r: &str) -> (&str, &str) {
    match r.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (r, "latest"),
    }
}

/// The names `r` may be stored under, most literal first.
pub fn candidates(r: &str) -> Vec<String> {
    let Ok(n) = normalize(r) else {
        return Vec::new();
    };
    let mut v = vec![n.clone()];
    for p in ["localhost/", "docker.io/library/", "docker.io/"] {
        v.push(format!("{p}{n}"));
        if let Some(s) = n.strip_prefix(p) {
            v.push(s.to_string());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_latest_and_registry_prefixes_are_tried() {
        assert_eq!(normalize("busybox").unwrap(), "busybox:latest");
        assert_eq!(
            normalize("localhost:5000/a/b").unwrap(),
            "localhost:5000/a/b:latest"
        );
        assert_eq!(normalize("a:1").unwrap(), "a:1");
        assert!(normalize("../x").is_err());
        assert!(normalize("a b").is_err());
        assert!(candidates("bb").contains(&"localhost/bb:latest".to_string()));
        assert!(candidates("localhost/bb:1").contains(&"bb:1".to_string()));
        assert_eq!(split("localhost/bb:1"), ("localhost/bb", "1"));
    }
}
