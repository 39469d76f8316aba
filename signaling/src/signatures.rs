//! The applicant's signature (申请人签名确认): the approver holding a case in its call asks the
//! applicant to sign a summary of the application, on the agent's device or on the resident's own
//! phone. The summary is a fixed text (the applicant masked, as the signer sees it); the signer's
//! page shows it, hashes exactly what it shows and sends that SHA-256 back with the strokes, so a
//! signature is bound to the text it was made under. A signature becomes two materials of the
//! case: the rendered PNG and a JSON record (the summary, its digest, the strokes with their times
//! and the PNG's digest), both archived with the case.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit;
use crate::config::rfc3339;
use crate::error::{Error, Result};
use crate::workflow::{self, Actor, CaseFacts, CaseState, Role};

/// Most strokes in one signature.
pub const MAX_STROKES: usize = 200;
/// Most points over all strokes (a page samples at most every 8 ms).
pub const MAX_POINTS: usize = 5_000;
/// Largest rendered image, in bytes.
pub const MAX_IMAGE_BYTES: usize = 512 * 1024;

/// Who signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Signer {
    /// The applicant at the service point, on the agent's device (tablet or laptop).
    Agent,
    /// The applicant at home, on the phone it joined with (群众远程接入).
    Resident,
}

impl Signer {
    fn as_str(self) -> &'static str {
        match self {
            Signer::Agent => "agent",
            Signer::Resident => "resident",
        }
    }

    fn parse(s: &str) -> Signer {
        if s == "resident" {
            Signer::Resident
        } else {
            Signer::Agent
        }
    }

    /// Whether `actor` is the one who signs for this case.
    fn is(self, actor: &Actor, facts: &CaseFacts) -> bool {
        match self {
            Signer::Agent => workflow::is_case_agent(actor, facts),
            Signer::Resident => actor.role == Role::Resident && facts.residents.contains(&actor.id),
        }
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureState {
    /// Waiting for the signer.
    Pending,
    /// Signed.
    Signed,
    /// A later request took its place before it was signed.
    Superseded,
}

/// A signature request as the case's people see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SignatureRequest {
    /// Id.
    pub id: i64,
    /// The case.
    pub case_id: i64,
    /// Who signs.
    pub signer: Signer,
    /// The exact text the signer is shown (lines separated by `\n`).
    pub summary: String,
    /// SHA-256 of `summary` as UTF-8, lowercase hex.
    pub summary_sha256: String,
    /// When it was asked, RFC 3339.
    pub requested_at: String,
    /// Where it stands.
    pub state: SignatureState,
    /// When it was signed, RFC 3339.
    pub signed_at: Option<String>,
    /// The rendered signature (a material), once signed.
    pub image_material_id: Option<i64>,
    /// The signature's record (a material), once signed.
    pub record_material_id: Option<i64>,
}

const COLUMNS: &str = "id, case_id, signer, summary, summary_sha256, requested_at, signed_at, \
     superseded_at, image_material_id, record_material_id";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SignatureRequest> {
    let signer: String = r.get(2)?;
    let signed_at: Option<i64> = r.get(6)?;
    let superseded_at: Option<i64> = r.get(7)?;
    Ok(SignatureRequest {
        id: r.get(0)?,
        case_id: r.get(1)?,
        signer: Signer::parse(&signer),
        summary: r.get(3)?,
        summary_sha256: r.get(4)?,
        requested_at: rfc3339(r.get(5)?),
        state: match (signed_at, superseded_at) {
            (Some(_), _) => SignatureState::Signed,
            (None, Some(_)) => SignatureState::Superseded,
            (None, None) => SignatureState::Pending,
        },
        signed_at: signed_at.map(rfc3339),
        image_material_id: r.get(8)?,
        record_material_id: r.get(9)?,
    })
}

/// SHA-256 of a text, lowercase hex.
pub fn text_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The summary the applicant signs: the case, the item, the applicant masked (as the signer sees
/// it) and what is asked for.
fn summary(conn: &Connection, case_id: i64, now: i64) -> Result<String> {
    let (number, item, name, id_number): (String, String, String, String) = conn.query_row(
        "SELECT c.number, i.name, c.applicant_name, c.applicant_id_number
         FROM cases c JOIN service_items i ON i.id = c.item_id WHERE c.id = ?1",
        [case_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    Ok([
        "申请人签名确认".to_string(),
        format!("办件编号：{number}"),
        format!("事项：{item}"),
        format!(
            "申请人：{} {}",
            crate::personal::mask_name(&name),
            crate::personal::mask_id_number(&id_number)
        ),
        format!("申请内容：申请办理{item}"),
        format!("时间：{}（北京时间）", crate::config::china_minute(now)),
        "本人确认以上申请内容属实，并同意办理。".to_string(),
    ]
    .join("\n"))
}

/// Asks for the applicant's signature on case `case_id` (by the approver holding it, in its
/// call); an earlier request not yet signed is superseded. `recording` says whether the call is
/// being recorded, which `requires_recording` demands.
pub fn request(
    conn: &mut Connection,
    case_id: i64,
    actor: &Actor,
    signer: Signer,
    recording: bool,
    requires_recording: bool,
    now: i64,
) -> Result<SignatureRequest> {
    let tx = conn.transaction()?;
    let facts = crate::cases::visible_facts(&tx, case_id, actor)?;
    if !workflow::holds(actor, &facts) {
        return Err(Error::Forbidden(
            "only the approver holding the case asks for the applicant's signature".into(),
        ));
    }
    if facts.state != CaseState::InCall {
        return Err(Error::conflict(
            "invalid_transition",
            format!(
                "a signature is asked for in the call; the case is {}",
                facts.state.as_str()
            ),
        ));
    }
    if requires_recording && !recording {
        return Err(Error::conflict(
            "recording_required",
            "a signature is taken while the call is recorded: everyone in the call consents to \
             recording (同意录音) first",
        ));
    }
    if signer == Signer::Resident && facts.residents.is_empty() {
        return Err(Error::conflict(
            "no_resident",
            "the applicant is not in the call from home: invite it first, or let it sign on the \
             agent's device",
        ));
    }
    let text = summary(&tx, case_id, now)?;
    let digest = text_sha256(&text);
    tx.execute(
        "UPDATE signature_requests SET superseded_at = ?1
         WHERE case_id = ?2 AND signed_at IS NULL AND superseded_at IS NULL",
        params![now, case_id],
    )?;
    tx.execute(
        "INSERT INTO signature_requests (case_id, requested_by, signer, summary, summary_sha256, requested_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![case_id, actor.id, signer.as_str(), text, digest, now],
    )?;
    let id = tx.last_insert_rowid();
    audit::append(
        &tx,
        now,
        Some(actor),
        Some(case_id),
        "signature.requested",
        &json!({ "request_id": id, "signer": signer, "summary_sha256": digest }),
    )?;
    let request = get(&tx, case_id, id)?;
    tx.commit()?;
    Ok(request)
}

fn get(conn: &Connection, case_id: i64, id: i64) -> Result<SignatureRequest> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM signature_requests WHERE id = ?1 AND case_id = ?2"),
        params![id, case_id],
        from_row,
    )
    .optional()?
    .ok_or(Error::NotFound("signature request"))
}

/// The facts of a case for its signature requests: its holding approver, its agent and its
/// residents reach them; "not found" for anyone else.
pub fn facts_for(conn: &Connection, case_id: i64, actor: &Actor) -> Result<CaseFacts> {
    let facts = crate::cases::facts_for_materials(conn, case_id, actor)?;
    let reaches = workflow::holds(actor, &facts)
        || workflow::is_case_agent(actor, &facts)
        || facts.residents.contains(&actor.id);
    if reaches {
        Ok(facts)
    } else {
        Err(Error::NotFound("case"))
    }
}

/// The case's signature requests, newest first.
pub fn list(conn: &Connection, case_id: i64) -> Result<Vec<SignatureRequest>> {
    Ok(conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM signature_requests WHERE case_id = ?1 ORDER BY id DESC"
        ))?
        .query_map([case_id], from_row)?
        .collect::<rusqlite::Result<_>>()?)
}

/// One point of a stroke: where on the pad (0–1 from the left and the top) and when (ms since the
/// pad was first touched).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// From the left, 0–1.
    pub x: f64,
    /// From the top, 0–1.
    pub y: f64,
    /// Milliseconds since the first touch.
    pub t: u32,
}

/// What the signer's page sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// SHA-256 of the summary exactly as the page showed it.
    pub summary_sha256: String,
    /// The strokes, each a list of points in drawing order.
    pub strokes: Vec<Vec<Point>>,
    /// The pad rendered as a PNG, base64.
    pub image_png: String,
}

/// Checks a signature's strokes and summary digest against the request; returns the PNG bytes.
pub fn check(request: &SignatureRequest, signature: &Signature) -> Result<Vec<u8>> {
    use base64::Engine;
    if request.state != SignatureState::Pending {
        return Err(Error::conflict(
            "signature_not_pending",
            "this signature request is no longer waiting: it was signed or replaced",
        ));
    }
    if signature.summary_sha256 != request.summary_sha256 {
        return Err(Error::conflict(
            "summary_changed",
            "summary_sha256: the summary shown is not the one asked for; show it again and sign",
        ));
    }
    let points: usize = signature.strokes.iter().map(Vec::len).sum();
    if signature.strokes.is_empty() || points < 2 {
        return Err(Error::bad(
            "invalid_field",
            "strokes: the pad is empty; sign first",
        ));
    }
    if signature.strokes.len() > MAX_STROKES || points > MAX_POINTS {
        return Err(Error::bad(
            "invalid_field",
            format!("strokes: at most {MAX_STROKES} strokes and {MAX_POINTS} points"),
        ));
    }
    let inside = |p: &Point| (0.0..=1.0).contains(&p.x) && (0.0..=1.0).contains(&p.y);
    if !signature.strokes.iter().flatten().all(inside) {
        return Err(Error::bad(
            "invalid_field",
            "strokes: each point has x and y from 0 to 1 (t: whole ms since the first touch)",
        ));
    }
    let image = base64::engine::general_purpose::STANDARD
        .decode(signature.image_png.as_bytes())
        .map_err(|_| Error::bad("invalid_field", "image_png: not base64"))?;
    if image.len() > MAX_IMAGE_BYTES {
        return Err(Error::TooLarge(format!(
            "image_png: at most {MAX_IMAGE_BYTES} bytes"
        )));
    }
    if !matches!(crate::materials::sniff(&image), Ok("image/png")) {
        return Err(Error::bad("invalid_field", "image_png: not a PNG image"));
    }
    Ok(image)
}

/// The request `id` of case `case_id` if `actor` is its signer, checked for signing.
pub fn for_signer(
    conn: &Connection,
    case_id: i64,
    id: i64,
    actor: &Actor,
) -> Result<SignatureRequest> {
    let facts = facts_for(conn, case_id, actor)?;
    let request = get(conn, case_id, id)?;
    if !request.signer.is(actor, &facts) {
        return Err(Error::Forbidden(match request.signer {
            Signer::Agent => "this signature is made on the agent's device".into(),
            Signer::Resident => "this signature is made on the applicant's own phone".into(),
        }));
    }
    Ok(request)
}

/// The signature's record: what was signed, how, and the image's digest.
pub fn record(
    request: &SignatureRequest,
    signature: &Signature,
    image_sha256: &str,
    now: i64,
) -> Vec<u8> {
    let record = json!({
        "type": "cloudhelp.signature/v1",
        "request_id": request.id,
        "signer": request.signer,
        "summary": request.summary,
        "summary_sha256": request.summary_sha256,
        "signed_at": rfc3339(now),
        "image_sha256": image_sha256,
        "strokes": signature.strokes,
    });
    serde_json::to_vec_pretty(&record).unwrap_or_default()
}

/// Marks request `id` signed with its two materials, and records the event.
pub fn signed(
    conn: &Connection,
    request: &SignatureRequest,
    actor: &Actor,
    image_material_id: i64,
    record_material_id: i64,
    record_sha256: &str,
    now: i64,
) -> Result<()> {
    let changed = conn.execute(
        "UPDATE signature_requests SET signed_at = ?1, signed_by = ?2, image_material_id = ?3,
         record_material_id = ?4 WHERE id = ?5 AND signed_at IS NULL AND superseded_at IS NULL",
        params![
            now,
            actor.id,
            image_material_id,
            record_material_id,
            request.id
        ],
    )?;
    if changed == 0 {
        return Err(Error::conflict(
            "signature_not_pending",
            "this signature request is no longer waiting: it was signed or replaced",
        ));
    }
    audit::append(
        conn,
        now,
        Some(actor),
        Some(request.case_id),
        "signature.signed",
        &json!({
            "request_id": request.id,
            "summary_sha256": request.summary_sha256,
            "image_material_id": image_material_id,
            "record_material_id": record_material_id,
            "record_sha256": record_sha256,
        }),
    )
}
