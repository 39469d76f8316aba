//! The browser app, embedded in the binary: static files served by `cloudhelp serve` with no
//! build step.

/// The files, by URL path.
const ASSETS: &[(&str, &[u8], &str)] = &[
    (
        "/",
        include_bytes!("../static/index.html"),
        "text/html; charset=utf-8",
    ),
    (
        "/index.html",
        include_bytes!("../static/index.html"),
        "text/html; charset=utf-8",
    ),
    (
        "/app.js",
        include_bytes!("../static/app.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "/app.css",
        include_bytes!("../static/app.css"),
        "text/css; charset=utf-8",
    ),
];

/// The bytes and content type of the file at `path`, if there is one.
pub fn asset(path: &str) -> Option<(&'static [u8], &'static str)> {
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, bytes, content_type)| (*bytes, *content_type))
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
}
