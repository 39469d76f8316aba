//! A strict reader for the zip container of a case archive.
//!
//! Owns the parsing of untrusted zip structure. It reads the end record and the central directory,
//! then every local header, and accepts only what the packer writes: stored entries, no encryption,
//! no data descriptors, no zip64, no comments, no extra fields, local and central headers that agree,
//! and entries that tile the file exactly up to the central directory (no gaps, no overlaps, nothing
//! hidden between them). Header fields that carry no content (versions, times, attributes) must have
//! the one value format 1 writes, so the container has a single byte form and a changed byte anywhere
//! is a rejection, not an ignored detail. Content is not read here: [`EntryReader`] streams it with a CRC check.

use std::io::{Read, Seek, SeekFrom};

/// Limits that bound the work a hostile archive can cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most entries in the archive.
    pub max_entries: usize,
    /// Most bytes of all entries together.
    pub max_total_bytes: u64,
    /// Most bytes of a tag or `esign/` file (these are read into memory).
    pub max_tag_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_total_bytes: 64 << 30,
            max_tag_file_bytes: 64 << 20,
        }
    }
}

/// One entry of the central directory, checked against its local header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ZipEntry {
    pub name: String,
    pub data_offset: u64,
    pub size: u64,
    pub crc32: u32,
}

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;
const EOCD_LEN: u64 = 22;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;
/// General-purpose flag bit 11: the name is UTF-8. Set exactly when the name is not ASCII.
const UTF8_FLAG: u16 = 1 << 11;
/// "Version made by": Unix, zip 1.0 (what format 1 writes).
const MADE_BY: u16 = 0x030a;
/// "Version needed to extract": 1.0 (stored entries, no zip64).
const VERSION_NEEDED: u16 = 10;
/// Modification time and date: 1980-01-01 00:00, the DOS epoch (archives are reproducible).
const DOS_TIME: u16 = 0;
const DOS_DATE: u16 = 0x0021;
/// External attributes: a regular file, mode 0644.
const EXTERNAL_ATTRIBUTES: u32 = 0o100_644 << 16;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_at<R: Read + Seek>(r: &mut R, offset: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len];
    r.seek(SeekFrom::Start(offset))
        .and_then(|_| r.read_exact(&mut buf))
        .map_err(|e| format!("cannot read {len} bytes at offset {offset}: {e}"))?;
    Ok(buf)
}

/// Fields shared by local and central headers, compared between the two.
#[derive(Debug, PartialEq, Eq)]
struct HeaderFields {
    needed: u16,
    flags: u16,
    method: u16,
    time: u16,
    date: u16,
    crc32: u32,
    compressed: u32,
    uncompressed: u32,
    name: Vec<u8>,
}

/// Reads and cross-checks the whole directory. Errors name the entry at fault.
pub(crate) fn read_directory<R: Read + Seek>(
    r: &mut R,
    limits: &Limits,
) -> Result<Vec<ZipEntry>, String> {
    let len = r
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("cannot seek: {e}"))?;
    if len < EOCD_LEN {
        return Err("too short to be a zip file".into());
    }
    let eocd_at = len - EOCD_LEN;
    let eocd = read_at(r, eocd_at, EOCD_LEN as usize)?;
    if u32_at(&eocd, 0) != EOCD_SIG {
        return Err("no end-of-central-directory record at the end (archive comments and trailing bytes are not allowed)".into());
    }
    if eocd_at >= 20 && u32_at(&read_at(r, eocd_at - 20, 4)?, 0) == ZIP64_LOCATOR_SIG {
        return Err("zip64 archives are not supported".into());
    }
    let (disk, cd_disk) = (u16_at(&eocd, 4), u16_at(&eocd, 6));
    let (on_disk, total) = (u16_at(&eocd, 8), u16_at(&eocd, 10));
    let (cd_size, cd_offset) = (u64::from(u32_at(&eocd, 12)), u64::from(u32_at(&eocd, 16)));
    if disk != 0 || cd_disk != 0 || on_disk != total {
        return Err("multi-disk archives are not supported".into());
    }
    if usize::from(total) > limits.max_entries {
        return Err(format!(
            "{total} entries is over the limit of {}",
            limits.max_entries
        ));
    }
    if cd_offset + cd_size != eocd_at {
        return Err(format!(
            "central directory ({cd_size} bytes at {cd_offset}) does not end where the end record begins ({eocd_at})"
        ));
    }
    let cd_len = usize::try_from(cd_size).map_err(|_| "central directory too large".to_string())?;
    let cd = read_at(r, cd_offset, cd_len)?;
    let mut at = 0usize;
    let mut entries = Vec::with_capacity(usize::from(total));
    let mut central = Vec::with_capacity(usize::from(total));
    for i in 0..total {
        if cd.len() - at < CENTRAL_LEN || u32_at(&cd, at) != CENTRAL_SIG {
            return Err(format!("central directory entry {i} is malformed"));
        }
        let h = &cd[at..];
        let made_by = u16_at(h, 4);
        let fields = HeaderFields {
            needed: u16_at(h, 6),
            flags: u16_at(h, 8),
            method: u16_at(h, 10),
            time: u16_at(h, 12),
            date: u16_at(h, 14),
            crc32: u32_at(h, 16),
            compressed: u32_at(h, 20),
            uncompressed: u32_at(h, 24),
            name: Vec::new(),
        };
        let (name_len, extra_len, comment_len) = (
            usize::from(u16_at(h, 28)),
            usize::from(u16_at(h, 30)),
            usize::from(u16_at(h, 32)),
        );
        let internal = u16_at(h, 36);
        let external = u32_at(h, 38);
        let local_offset = u64::from(u32_at(h, 42));
        let variable = name_len + extra_len + comment_len;
        if cd.len() - at - CENTRAL_LEN < variable {
            return Err(format!(
                "central directory entry {i} runs past the directory"
            ));
        }
        let name_bytes = h[CENTRAL_LEN..CENTRAL_LEN + name_len].to_vec();
        let name = String::from_utf8(name_bytes.clone())
            .map_err(|_| format!("entry {i}: name is not UTF-8"))?;
        let at_name = format!("entry {name:?}");
        let utf8 = if name.is_ascii() { 0 } else { UTF8_FLAG };
        if fields.flags & !UTF8_FLAG != 0 {
            return Err(format!(
                "{at_name}: flags {:#06x} (encryption, data descriptor or unknown) are not allowed",
                fields.flags
            ));
        }
        if fields.flags != utf8 {
            return Err(format!(
                "{at_name}: the UTF-8 name flag must be set exactly for non-ASCII names"
            ));
        }
        if fields.method != 0 {
            return Err(format!(
                "{at_name}: compression method {} (only stored entries are allowed)",
                fields.method
            ));
        }
        if fields.compressed != fields.uncompressed {
            return Err(format!(
                "{at_name}: stored entry declares {} compressed but {} uncompressed bytes",
                fields.compressed, fields.uncompressed
            ));
        }
        if fields.compressed == u32::MAX {
            return Err(format!("{at_name}: zip64 sizes are not supported"));
        }
        if extra_len != 0 || comment_len != 0 {
            return Err(format!(
                "{at_name}: extra fields and comments are not allowed"
            ));
        }
        if external != EXTERNAL_ATTRIBUTES {
            return Err(format!(
                "{at_name}: external attributes {external:#010x} are not those of a regular 0644 file"
            ));
        }
        if made_by != MADE_BY
            || fields.needed != VERSION_NEEDED
            || fields.time != DOS_TIME
            || fields.date != DOS_DATE
            || internal != 0
        {
            return Err(format!(
                "{at_name}: version, time or attribute fields are not the values format 1 writes"
            ));
        }
        at += CENTRAL_LEN + variable;
        central.push((
            HeaderFields {
                name: name_bytes,
                ..fields
            },
            local_offset,
            name,
        ));
    }
    if at != cd.len() {
        return Err("central directory has bytes after its last entry".into());
    }
    // Local headers: each must repeat its central header, and the entries must tile the file.
    central.sort_by_key(|(_, offset, _)| *offset);
    let mut expected_offset = 0u64;
    let mut previous = String::from("(start of file)");
    let mut total_bytes = 0u64;
    for (fields, offset, name) in central {
        let at_name = format!("entry {name:?}");
        if offset != expected_offset {
            return Err(format!(
                "{at_name}: local header at {offset}, but the entry before it, {previous:?}, ends at {expected_offset} (a declared size lies, or there is a gap, overlap or hidden data)"
            ));
        }
        let local = read_at(r, offset, LOCAL_LEN)?;
        if u32_at(&local, 0) != LOCAL_SIG {
            return Err(format!("{at_name}: no local header at {offset}"));
        }
        let (name_len, extra_len) = (
            usize::from(u16_at(&local, 26)),
            usize::from(u16_at(&local, 28)),
        );
        let local_fields = HeaderFields {
            needed: u16_at(&local, 4),
            flags: u16_at(&local, 6),
            method: u16_at(&local, 8),
            time: u16_at(&local, 10),
            date: u16_at(&local, 12),
            crc32: u32_at(&local, 14),
            compressed: u32_at(&local, 18),
            uncompressed: u32_at(&local, 22),
            name: read_at(r, offset + LOCAL_LEN as u64, name_len)?,
        };
        if local_fields != fields {
            return Err(format!(
                "{at_name}: local header disagrees with the central directory"
            ));
        }
        if extra_len != 0 {
            return Err(format!("{at_name}: local extra fields are not allowed"));
        }
        let data_offset = offset + (LOCAL_LEN + name_len) as u64;
        let size = u64::from(fields.compressed);
        expected_offset = data_offset + size;
        if expected_offset > cd_offset {
            return Err(format!(
                "{at_name}: declared size {size} runs into the central directory"
            ));
        }
        total_bytes += size;
        if total_bytes > limits.max_total_bytes {
            return Err(format!(
                "entries exceed the limit of {} bytes in total",
                limits.max_total_bytes
            ));
        }
        previous.clone_from(&name);
        entries.push(ZipEntry {
            name,
            data_offset,
            size,
            crc32: fields.crc32,
        });
    }
    if expected_offset != cd_offset {
        return Err(format!(
            "{} unaccounted bytes between the last entry and the central directory",
            cd_offset - expected_offset
        ));
    }
    Ok(entries)
}

/// Streams an entry's bytes, checking its CRC-32 at the end.
pub(crate) fn stream_entry<R: Read + Seek>(
    r: &mut R,
    entry: &ZipEntry,
    mut sink: impl FnMut(&[u8]),
) -> Result<(), String> {
    r.seek(SeekFrom::Start(entry.data_offset))
        .map_err(|e| format!("{}: cannot seek: {e}", entry.name))?;
    let mut crc = crc32fast::Hasher::new();
    let mut left = entry.size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        r.read_exact(&mut buf[..want])
            .map_err(|e| format!("{}: cannot read: {e}", entry.name))?;
        crc.update(&buf[..want]);
        sink(&buf[..want]);
        left -= want as u64;
    }
    if crc.finalize() != entry.crc32 {
        return Err(format!("{}: CRC-32 does not match its header", entry.name));
    }
    Ok(())
}
