//! The browser app, embedded in the binary: every file under `static/` is served by
//! `cloudhelp serve` with no build step (plain ES modules and CSS). `build.rs` makes the table.

/// The files, by URL path: `static/js/app.js` is `/js/app.js`.
const ASSETS: &[(&str, &[u8], &str)] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The bytes and content type of the file at `path`, if there is one. `/` is `index.html`.
pub fn asset(path: &str) -> Option<(&'static [u8], &'static str)> {
    let path = if path == "/" { "/index.html" } else { path };
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, bytes, content_type)| (*bytes, *content_type))
}

/// Every embedded URL path.
pub fn paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|(p, _, _)| *p)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_index_page_is_chinese_first() {
        let (page, content_type) = super::asset("/").unwrap();
        assert!(content_type.starts_with("text/html"));
        assert!(
            std::str::from_utf8(page)
                .unwrap()
                .contains("lang=\"zh-CN\"")
        );
        assert!(super::asset("/../Cargo.toml").is_none());
    }

    #[test]
    fn every_file_of_the_static_folder_is_embedded_with_its_type() {
        let (js, js_type) = super::asset("/js/main.js").unwrap();
        assert!(js_type.starts_with("text/javascript"));
        assert!(!js.is_empty());
        assert!(super::asset("/app.css").unwrap().1.starts_with("text/css"));
        // Every module the pages import is embedded (a missing one would be a blank page).
        for path in super::paths().filter(|p| p.ends_with(".js")) {
            let text = std::str::from_utf8(super::asset(path).unwrap().0).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(spec) = line.split('\'').nth(1) else {
                    continue;
                };
                let dir = &path[..path.rfind('/').unwrap() + 1];
                let target = resolve(dir, spec);
                assert!(
                    super::asset(&target).is_some(),
                    "{path} imports {spec}, which is not embedded"
                );
            }
        }
    }

    #[test]
    fn every_file_the_index_page_names_is_embedded() {
        let page = std::str::from_utf8(super::asset("/").unwrap().0).unwrap();
        let mut named = 0;
        for attr in ["src=\"", "href=\""] {
            for piece in page.split(attr).skip(1) {
                let target = &piece[..piece.find('"').unwrap()];
                assert!(
                    super::asset(target).is_some(),
                    "index.html names {target}, which is not embedded"
                );
                named += 1;
            }
        }
        assert!(named >= 4, "main.js, boot.js, app.css, favicon.svg");
    }

    fn resolve(dir: &str, spec: &str) -> String {
        let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
        for piece in spec.split('/') {
            match piece {
                "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        format!("/{}", parts.join("/"))
    }
}
