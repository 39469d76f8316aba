//! Pointing at what is wrong (标注): the approver holding a case freezes a frame of someone's
//! camera (or opens one of the case's materials) and draws arrows, circles and short text on it;
//! everyone in the call sees the picture and each change at once, and a live pointer that follows
//! the approver's cursor. Saved, the annotated picture becomes a material of the case with a JSON
//! record naming the picture it was drawn on by its SHA-256 (a material's, or the frozen frame's).
//!
//! The frozen frame is kept in the blob folder (content-addressed) for the case's call people; the
//! shapes go over `/ws` (`call.annotate`, `call.pointer`), small and bounded. A start, a close and
//! a save are case events; the strokes in between are not (the saved record keeps the last).

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit;
use crate::config::rfc3339;
use crate::error::{Error, Result};
use crate::workflow::{self, Actor, CaseFacts, UserId};

/// Most shapes on one picture.
pub const MAX_SHAPES: usize = 100;
/// The longest text label, in characters.
pub const MAX_TEXT_CHARS: usize = 30;
/// Pointer positions one user may send per [`POINTER_WINDOW_MS`] (a page sends at most 20 a
/// second).
pub const POINTER_BURST: usize = 60;
/// The window of [`POINTER_BURST`], ms.
pub const POINTER_WINDOW_MS: i64 = 2_000;
/// Largest frozen frame, in bytes (a 4K JPEG fits).
pub const MAX_FRAME_BYTES: u64 = 8 * 1024 * 1024;

/// One mark on the picture, in picture coordinates: 0–1 from the left and from the top.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Shape {
    /// An arrow from (x1, y1) to its head at (x2, y2).
    Arrow {
        /// Tail, from the left.
        x1: f64,
        /// Tail, from the top.
        y1: f64,
        /// Head, from the left.
        x2: f64,
        /// Head, from the top.
        y2: f64,
    },
    /// A circle around (x, y) of radius r (a share of the picture's width).
    Circle {
        /// Centre, from the left.
        x: f64,
        /// Centre, from the top.
        y: f64,
        /// Radius.
        r: f64,
    },
    /// A short text at (x, y).
    Text {
        /// From the left.
        x: f64,
        /// From the top.
        y: f64,
        /// 1 to 30 characters.
        text: String,
    },
}

/// What a picture is: a frozen frame of a participant's camera, or a material of the case.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Base {
    /// A frame of a participant's camera, frozen by the approver.
    Frame {
        /// Whose camera (`user-<id>`).
        of: String,
        /// The frame's SHA-256.
        sha256: String,
    },
    /// A material of the case.
    Material {
        /// Which.
        material_id: i64,
        /// Its SHA-256.
        sha256: String,
    },
}

impl Base {
    /// The picture's SHA-256.
    pub fn sha256(&self) -> &str {
        match self {
            Base::Frame { sha256, .. } | Base::Material { sha256, .. } => sha256,
        }
    }
}

/// An annotation as the call's people see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Annotation {
    /// Id.
    pub id: i64,
    /// The case.
    pub case_id: i64,
    /// Who draws (the approver holding the case).
    pub by: UserId,
    /// When it started, RFC 3339.
    pub created_at: String,
    /// The picture drawn on.
    pub base: Base,
    /// The marks, in drawing order.
    pub shapes: Vec<Shape>,
    /// Closed: nobody draws on it any more.
    pub closed: bool,
    /// The annotated picture, once saved.
    pub image_material_id: Option<i64>,
    /// The record of what was drawn on what, once saved.
    pub record_material_id: Option<i64>,
}

const COLUMNS: &str = "id, case_id, created_by, created_at, base_kind, base_sha256, \
     base_material_id, base_of, shapes, closed_at, image_material_id, record_material_id";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Annotation> {
    let kind: String = r.get(4)?;
    let sha256: String = r.get(5)?;
    let base = match kind.as_str() {
        "material" => Base::Material {
            material_id: r.get(6)?,
            sha256,
        },
        _ => Base::Frame {
            of: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
            sha256,
        },
    };
    let shapes: String = r.get(8)?;
    let closed_at: Option<i64> = r.get(9)?;
    Ok(Annotation {
        id: r.get(0)?,
        case_id: r.get(1)?,
        by: r.get(2)?,
        created_at: rfc3339(r.get(3)?),
        base,
        shapes: serde_json::from_str(&shapes).unwrap_or_default(),
        closed: closed_at.is_some(),
        image_material_id: r.get(10)?,
        record_material_id: r.get(11)?,
    })
}

/// What is wrong with a set of shapes, if anything.
pub fn check_shapes(shapes: &[Shape]) -> std::result::Result<(), String> {
    if shapes.len() > MAX_SHAPES {
        return Err(format!("shapes: at most {MAX_SHAPES}"));
    }
    let unit = |v: f64| (0.0..=1.0).contains(&v);
    for (n, shape) in shapes.iter().enumerate() {
        let ok = match shape {
            Shape::Arrow { x1, y1, x2, y2 } => [x1, y1, x2, y2].into_iter().all(|v| unit(*v)),
            Shape::Circle { x, y, r } => unit(*x) && unit(*y) && unit(*r),
            Shape::Text { x, y, text } => {
                let chars = text.trim().chars().count();
                unit(*x)
                    && unit(*y)
                    && (1..=MAX_TEXT_CHARS).contains(&chars)
                    && !text.chars().any(char::is_control)
            }
        };
        if !ok {
            return Err(format!(
                "shapes[{n}]: coordinates from 0 to 1; a text of 1 to {MAX_TEXT_CHARS} characters without control characters"
            ));
        }
    }
    Ok(())
}

/// The facts of a case whose call is open, if `actor` is the approver holding it (who draws).
fn drawing_facts(conn: &Connection, case_id: i64, actor: &Actor, now: i64) -> Result<CaseFacts> {
    let facts = crate::cases::visible_facts(conn, case_id, actor)?;
    if !workflow::holds(actor, &facts) {
        return Err(Error::Forbidden(
            "only the approver holding the case draws on a picture".into(),
        ));
    }
    if !workflow::call_open(&facts, now) {
        return Err(Error::conflict(
            "invalid_transition",
            "pictures are annotated in the case's call; it is not open",
        ));
    }
    Ok(facts)
}

/// Whether `actor` may freeze a frame of participant `of`'s camera in case `case_id`'s call: the
/// approver holding it, the call open, `of` one of its people. Checked before the frame's bytes
/// are kept (a face of someone outside the call is never stored), and again when it starts.
pub fn may_freeze(
    conn: &Connection,
    case_id: i64,
    actor: &Actor,
    of: &str,
    now: i64,
) -> Result<()> {
    let facts = drawing_facts(conn, case_id, actor, now)?;
    let whose = facts
        .call_people()
        .into_iter()
        .any(|u| crate::calls::participant_of(u).0 == of);
    if !whose {
        return Err(Error::bad(
            "invalid_field",
            format!("of: {of} is not one of this call's people"),
        ));
    }
    Ok(())
}

/// What a new annotation is drawn on (as the caller checked it).
pub enum NewBase {
    /// A frame of participant `of`'s camera, stored already as blob `sha256`.
    Frame {
        /// Whose camera.
        of: String,
        /// The stored frame.
        sha256: String,
        /// Its media type (JPEG or PNG).
        media_type: &'static str,
    },
    /// Material `id` of the case.
    Material(i64),
}

/// Starts an annotation of case `case_id` by `actor` on `base`; a case event.
pub fn start(
    conn: &mut Connection,
    case_id: i64,
    actor: &Actor,
    base: NewBase,
    now: i64,
) -> Result<Annotation> {
    let tx = conn.transaction()?;
    let (kind, sha256, material_id, of, media_type) = match base {
        NewBase::Frame {
            of,
            sha256,
            media_type,
        } => {
            may_freeze(&tx, case_id, actor, &of, now)?;
            ("frame", sha256, None, Some(of), media_type.to_string())
        }
        NewBase::Material(id) => {
            drawing_facts(&tx, case_id, actor, now)?;
            let material =
                crate::materials::get(&tx, case_id, id)?.ok_or(Error::NotFound("material"))?;
            if !material.media_type.starts_with("image/") {
                return Err(Error::bad(
                    "invalid_field",
                    "material_id: only a picture can be drawn on",
                ));
            }
            (
                "material",
                material.sha256,
                Some(id),
                None,
                material.media_type,
            )
        }
    };
    tx.execute(
        "INSERT INTO annotations (case_id, created_by, created_at, base_kind, base_sha256,
         base_material_id, base_of, base_media_type, shapes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '[]')",
        params![
            case_id,
            actor.id,
            now,
            kind,
            sha256,
            material_id,
            of,
            media_type
        ],
    )?;
    let id = tx.last_insert_rowid();
    let annotation = get(&tx, case_id, id)?;
    audit::append(
        &tx,
        now,
        Some(actor),
        Some(case_id),
        "annotation.started",
        &json!({ "annotation_id": id, "base": annotation.base }),
    )?;
    tx.commit()?;
    Ok(annotation)
}

/// Annotation `id` of case `case_id`.
pub fn get(conn: &Connection, case_id: i64, id: i64) -> Result<Annotation> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM annotations WHERE id = ?1 AND case_id = ?2"),
        params![id, case_id],
        from_row,
    )
    .optional()?
    .ok_or(Error::NotFound("annotation"))
}

/// The picture of annotation `id` (its blob digest and media type), for the call's people while
/// the call is open.
pub fn base(
    conn: &Connection,
    case_id: i64,
    id: i64,
    actor: &Actor,
    now: i64,
) -> Result<(String, String)> {
    let facts = crate::cases::facts(conn, case_id)?.ok_or(Error::NotFound("case"))?;
    if !workflow::may_join_call(actor, &facts, now) {
        return Err(Error::NotFound("case"));
    }
    conn.query_row(
        "SELECT base_sha256, base_media_type FROM annotations WHERE id = ?1 AND case_id = ?2",
        params![id, case_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?
    .ok_or(Error::NotFound("annotation"))
}

/// The approver draws: the annotation's shapes become `shapes` (checked). Returns it and the
/// case's facts (whom to tell).
pub fn draw(
    conn: &Connection,
    case_id: i64,
    id: i64,
    actor: &Actor,
    shapes: &[Shape],
    now: i64,
) -> Result<(Annotation, CaseFacts)> {
    let facts = drawing_facts(conn, case_id, actor, now)?;
    check_shapes(shapes).map_err(|m| Error::bad("invalid_field", m))?;
    let text = serde_json::to_string(shapes).map_err(|e| Error::Internal(e.to_string()))?;
    let changed = conn.execute(
        "UPDATE annotations SET shapes = ?1 WHERE id = ?2 AND case_id = ?3 AND closed_at IS NULL",
        params![text, id, case_id],
    )?;
    if changed == 0 {
        get(conn, case_id, id)?; // not found, or:
        return Err(Error::conflict(
            "annotation_closed",
            "this picture is closed; freeze a frame or open the material again",
        ));
    }
    Ok((get(conn, case_id, id)?, facts))
}

/// Closes annotation `id` (the approver is done with it); a case event. Returns it and the facts.
pub fn close(
    conn: &Connection,
    case_id: i64,
    id: i64,
    actor: &Actor,
    now: i64,
) -> Result<(Annotation, CaseFacts)> {
    let facts = drawing_facts(conn, case_id, actor, now)?;
    let changed = conn.execute(
        "UPDATE annotations SET closed_at = ?1 WHERE id = ?2 AND case_id = ?3 AND closed_at IS NULL",
        params![now, id, case_id],
    )?;
    let annotation = get(conn, case_id, id)?;
    if changed > 0 {
        audit::append(
            conn,
            now,
            Some(actor),
            Some(case_id),
            "annotation.closed",
            &json!({ "annotation_id": id, "shapes": annotation.shapes.len() }),
        )?;
    }
    Ok((annotation, facts))
}

/// Annotation `id` ready to be saved by `actor`.
pub fn for_saving(
    conn: &Connection,
    case_id: i64,
    id: i64,
    actor: &Actor,
    now: i64,
) -> Result<Annotation> {
    drawing_facts(conn, case_id, actor, now)?;
    let annotation = get(conn, case_id, id)?;
    if annotation.image_material_id.is_some() {
        return Err(Error::conflict(
            "annotation_saved",
            "this annotated picture is saved already",
        ));
    }
    Ok(annotation)
}

/// The record of a saved annotation: what was drawn on what, and the saved picture's digest.
pub fn record(annotation: &Annotation, image_sha256: &str, now: i64) -> Vec<u8> {
    let record = json!({
        "type": "cloudhelp.annotation/v1",
        "annotation_id": annotation.id,
        "drawn_by": annotation.by,
        "base": annotation.base,
        "shapes": annotation.shapes,
        "saved_at": rfc3339(now),
        "image_sha256": image_sha256,
    });
    serde_json::to_vec_pretty(&record).unwrap_or_default()
}

/// Marks annotation `id` saved (and closed) with its two materials; a case event.
pub fn saved(
    conn: &Connection,
    annotation: &Annotation,
    actor: &Actor,
    image_material_id: i64,
    record_material_id: i64,
    now: i64,
) -> Result<Annotation> {
    let changed = conn.execute(
        "UPDATE annotations SET image_material_id = ?1, record_material_id = ?2,
         closed_at = COALESCE(closed_at, ?3) WHERE id = ?4 AND image_material_id IS NULL",
        params![image_material_id, record_material_id, now, annotation.id],
    )?;
    if changed == 0 {
        return Err(Error::conflict(
            "annotation_saved",
            "this annotated picture is saved already",
        ));
    }
    audit::append(
        conn,
        now,
        Some(actor),
        Some(annotation.case_id),
        "annotation.saved",
        &json!({
            "annotation_id": annotation.id,
            "base": annotation.base,
            "image_material_id": image_material_id,
            "record_material_id": record_material_id,
        }),
    )?;
    get(conn, annotation.case_id, annotation.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_stay_on_the_picture_and_labels_are_short_plain_text() {
        let arrow = Shape::Arrow {
            x1: 0.1,
            y1: 0.1,
            x2: 0.5,
            y2: 0.5,
        };
        let text = |t: &str| Shape::Text {
            x: 0.5,
            y: 0.5,
            text: t.into(),
        };
        assert!(check_shapes(&[arrow.clone(), text("这里模糊")]).is_ok());
        let off = Shape::Circle {
            x: 1.2,
            y: 0.5,
            r: 0.1,
        };
        assert!(
            check_shapes(&[arrow.clone(), off])
                .unwrap_err()
                .contains("shapes[1]")
        );
        assert!(check_shapes(&[text("")]).is_err());
        assert!(check_shapes(&[text(&"字".repeat(MAX_TEXT_CHARS + 1))]).is_err());
        assert!(check_shapes(&[text("a\u{7}b")]).is_err());
        assert!(check_shapes(&vec![arrow; MAX_SHAPES + 1]).is_err());
        let parsed: Shape =
            serde_json::from_str(r#"{"kind":"circle","x":0.5,"y":0.5,"r":0.2}"#).unwrap();
        assert_eq!(
            parsed,
            Shape::Circle {
                x: 0.5,
                y: 0.5,
                r: 0.2
            }
        );
        assert!(serde_json::from_str::<Shape>(r#"{"kind":"blur","x":0.5}"#).is_err());
    }
}
