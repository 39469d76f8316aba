//! A strict reader for the zip container of a case archive (zip64 included).
//!
//! Owns the parsing of untrusted zip structure. It reads the end record and the central directory,
//! then every local header, and accepts only what the packer writes: stored entries, no encryption,
//! no data descriptors, no comments, no extra fields but zip64 ones holding exactly the values their
//! header defers to them, zip64 end records only when needed, local and central headers that agree,
//! and entries that tile the file exactly up to the central directory (no gaps, no overlaps, nothing
//! hidden between them). Header fields that carry no content (versions, times, attributes) must have
//! the one value format 1 writes, so the container has a single byte form and a changed byte anywhere
//! is a rejection, not an ignored detail. Content is not read here: [`EntryReader`] streams it with a CRC check.

use std::io::{Read, Seek, SeekFrom};

/// The default of [`Limits::max_tag_file_bytes`].
pub(crate) const DEFAULT_MAX_TAG_FILE_BYTES: u64 = 16 << 20;

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
            max_tag_file_bytes: DEFAULT_MAX_TAG_FILE_BYTES,
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
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;
const EOCD_LEN: u64 = 22;
const ZIP64_EOCD_LEN: u64 = 56;
const ZIP64_LOCATOR_LEN: u64 = 20;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;
/// The 32-bit "look in the zip64 field" sentinel, and the threshold for using zip64 at all.
const SENTINEL: u32 = u32::MAX;
const ZIP64_THRESHOLD: u64 = u32::MAX as u64;
/// Zip64 extended information extra field id.
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// General-purpose flag bit 11: the name is UTF-8. Set exactly when the name is not ASCII.
const UTF8_FLAG: u16 = 1 << 11;
/// "Version made by" / "needed": Unix, 1.0 for plain entries; 4.5 for entries with zip64 sizes
/// (payload files streamed by the packer, whose size is not known in advance).
const MADE_BY_PLAIN: u16 = 0x030a;
const MADE_BY_ZIP64: u16 = 0x032d;
const NEEDED_PLAIN: u16 = 10;
const NEEDED_ZIP64: u16 = 45;
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

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(bytes)
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

/// Where the central directory is, from the end records.
struct Directory {
    offset: u64,
    size: u64,
    entries: u64,
    /// Where the end records begin (the central directory must end exactly there).
    ends_at: u64,
    /// The largest "version needed" the zip64 end record claims, checked against the entries.
    zip64_needed: Option<u16>,
}

/// Reads the end-of-central-directory record (and the zip64 one, if the archive needs it).
fn read_end<R: Read + Seek>(r: &mut R) -> Result<Directory, String> {
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
    let (disk, cd_disk) = (u16_at(&eocd, 4), u16_at(&eocd, 6));
    let (on_disk, total) = (u16_at(&eocd, 8), u16_at(&eocd, 10));
    let (size32, offset32) = (u32_at(&eocd, 12), u32_at(&eocd, 16));
    if disk != 0 || cd_disk != 0 || on_disk != total {
        return Err("multi-disk archives are not supported".into());
    }
    let tail = ZIP64_EOCD_LEN + ZIP64_LOCATOR_LEN;
    let has_locator = eocd_at >= ZIP64_LOCATOR_LEN
        && u32_at(&read_at(r, eocd_at - ZIP64_LOCATOR_LEN, 4)?, 0) == ZIP64_LOCATOR_SIG;
    if !has_locator {
        let dir = Directory {
            offset: u64::from(offset32),
            size: u64::from(size32),
            entries: u64::from(total),
            ends_at: eocd_at,
            zip64_needed: None,
        };
        // Without zip64 records the 32-bit fields are literal, even at their largest values.
        return Ok(dir);
    }
    if eocd_at < tail {
        return Err("zip64 end records do not fit in the file".into());
    }
    let locator = read_at(r, eocd_at - ZIP64_LOCATOR_LEN, ZIP64_LOCATOR_LEN as usize)?;
    let record_at = eocd_at - tail;
    if u32_at(&locator, 4) != 0 || u64_at(&locator, 8) != record_at || u32_at(&locator, 16) != 1 {
        return Err("zip64 locator does not point at the zip64 end record just before it".into());
    }
    let record = read_at(r, record_at, ZIP64_EOCD_LEN as usize)?;
    let needed = u16_at(&record, 14);
    let ok = u32_at(&record, 0) == ZIP64_EOCD_SIG
        && u64_at(&record, 4) == ZIP64_EOCD_LEN - 12
        && u16_at(&record, 12) == needed
        && u32_at(&record, 16) == 0
        && u32_at(&record, 20) == 0
        && u64_at(&record, 24) == u64_at(&record, 32);
    if !ok {
        return Err("zip64 end record is malformed or claims several disks".into());
    }
    let dir = Directory {
        entries: u64_at(&record, 32),
        size: u64_at(&record, 40),
        offset: u64_at(&record, 48),
        ends_at: record_at,
        zip64_needed: Some(needed),
    };
    // The one form a writer uses: zip64 only when needed, and then 32-bit fields set as follows.
    let needs_zip64 =
        dir.entries > u64::from(u16::MAX) || dir.size.max(dir.offset) > ZIP64_THRESHOLD;
    let canonical = needs_zip64
        && u64::from(total) == dir.entries.min(u64::from(u16::MAX))
        && size32 == SENTINEL
        && u64::from(offset32) == dir.offset.min(ZIP64_THRESHOLD);
    if !canonical {
        return Err(
            "zip64 end records where none are needed, or 32-bit fields that disagree".into(),
        );
    }
    Ok(dir)
}

/// Reads and cross-checks the whole directory. Errors name the entry at fault.
pub(crate) fn read_directory<R: Read + Seek>(
    r: &mut R,
    limits: &Limits,
) -> Result<Vec<ZipEntry>, String> {
    let dir = read_end(r)?;
    if dir.entries > limits.max_entries as u64 {
        return Err(format!(
            "{} entries is over the limit of {}",
            dir.entries, limits.max_entries
        ));
    }
    if dir.offset.checked_add(dir.size) != Some(dir.ends_at) {
        return Err(format!(
            "central directory ({} bytes at {}) does not end where the end records begin ({})",
            dir.size, dir.offset, dir.ends_at
        ));
    }
    let cd_len = usize::try_from(dir.size)
        .ok()
        .filter(|&n| n <= limits.max_entries.saturating_mul(CENTRAL_LEN + 512 + 24))
        .ok_or_else(|| "central directory is larger than the entry limit allows".to_string())?;
    let cd = read_at(r, dir.offset, cd_len)?;
    let mut at = 0usize;
    let mut central = Vec::new();
    let mut max_needed = NEEDED_PLAIN;
    for i in 0..dir.entries {
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
        let offset32 = u32_at(h, 42);
        let variable = name_len + extra_len + comment_len;
        if cd.len() - at - CENTRAL_LEN < variable {
            return Err(format!(
                "central directory entry {i} runs past the directory"
            ));
        }
        let name_bytes = h[CENTRAL_LEN..CENTRAL_LEN + name_len].to_vec();
        let extra = &h[CENTRAL_LEN + name_len..CENTRAL_LEN + name_len + extra_len];
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
        if comment_len != 0 {
            return Err(format!("{at_name}: comments are not allowed"));
        }
        if external != EXTERNAL_ATTRIBUTES {
            return Err(format!(
                "{at_name}: external attributes {external:#010x} are not those of a regular 0644 file"
            ));
        }
        let zip64_sizes = fields.needed == NEEDED_ZIP64;
        let expected_made_by = if zip64_sizes {
            MADE_BY_ZIP64
        } else {
            MADE_BY_PLAIN
        };
        if made_by != expected_made_by
            || !matches!(fields.needed, NEEDED_PLAIN | NEEDED_ZIP64)
            || fields.time != DOS_TIME
            || fields.date != DOS_DATE
            || internal != 0
        {
            return Err(format!(
                "{at_name}: version, time or attribute fields are not the values the packer writes"
            ));
        }
        max_needed = max_needed.max(fields.needed);
        let (size, offset) = central_zip64(&fields, zip64_sizes, offset32, extra)
            .map_err(|why| format!("{at_name}: {why}"))?;
        at += CENTRAL_LEN + variable;
        central.push((
            HeaderFields {
                name: name_bytes,
                ..fields
            },
            size,
            offset,
            name,
        ));
    }
    if at != cd.len() {
        return Err("central directory has bytes after its last entry".into());
    }
    if dir.zip64_needed.is_some_and(|n| n != max_needed) {
        return Err("zip64 end record's version disagrees with the entries".into());
    }
    tile_local_headers(r, central, dir.offset, limits)
}

/// The entry's size and local header offset, from the 32-bit fields and the zip64 extra field,
/// which must hold exactly the values the 32-bit fields mark with the sentinel.
fn central_zip64(
    fields: &HeaderFields,
    zip64_sizes: bool,
    offset32: u32,
    extra: &[u8],
) -> Result<(u64, u64), String> {
    let mut want_len = 0;
    if zip64_sizes {
        if fields.compressed != SENTINEL {
            return Err("a zip64 entry must mark its sizes with the sentinel".into());
        }
        want_len += 16;
    } else if fields.compressed == SENTINEL {
        return Err("sizes marked zip64 in an entry that is not".into());
    }
    if offset32 == SENTINEL {
        want_len += 8;
    }
    if want_len == 0 {
        return if extra.is_empty() {
            Ok((u64::from(fields.compressed), u64::from(offset32)))
        } else {
            Err("extra fields are not allowed".into())
        };
    }
    if extra.len() != 4 + want_len
        || u16_at(extra, 0) != ZIP64_EXTRA_ID
        || usize::from(u16_at(extra, 2)) != want_len
    {
        return Err(
            "the zip64 extra field is not exactly the values the header defers to it".into(),
        );
    }
    let mut at = 4;
    let mut size = u64::from(fields.compressed);
    if zip64_sizes {
        let (uncompressed, compressed) = (u64_at(extra, at), u64_at(extra, at + 8));
        if uncompressed != compressed {
            return Err(format!(
                "stored entry declares {compressed} compressed but {uncompressed} uncompressed bytes"
            ));
        }
        size = compressed;
        at += 16;
    }
    let mut offset = u64::from(offset32);
    if offset32 == SENTINEL {
        offset = u64_at(extra, at);
        if offset < ZIP64_THRESHOLD {
            return Err("a zip64 offset that fits in 32 bits".into());
        }
    }
    Ok((size, offset))
}

/// Reads every local header: each must repeat its central header, and the entries must tile the
/// file from offset 0 to the central directory with nothing between them.
fn tile_local_headers<R: Read + Seek>(
    r: &mut R,
    mut central: Vec<(HeaderFields, u64, u64, String)>,
    cd_offset: u64,
    limits: &Limits,
) -> Result<Vec<ZipEntry>, String> {
    central.sort_by_key(|(_, _, offset, _)| *offset);
    let mut entries = Vec::with_capacity(central.len());
    let mut expected_offset = 0u64;
    let mut previous = String::from("(start of file)");
    let mut total_bytes = 0u64;
    for (fields, size, offset, name) in central {
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
        // The local zip64 field holds both sizes (and only them) exactly when the central one does.
        let local_extra = read_at(r, offset + (LOCAL_LEN + name_len) as u64, extra_len)?;
        let expected_extra: Vec<u8> = if fields.needed == NEEDED_ZIP64 {
            [
                &ZIP64_EXTRA_ID.to_le_bytes()[..],
                &16u16.to_le_bytes(),
                &size.to_le_bytes(),
                &size.to_le_bytes(),
            ]
            .concat()
        } else {
            Vec::new()
        };
        if local_extra != expected_extra {
            return Err(format!(
                "{at_name}: local extra field disagrees with the central directory"
            ));
        }
        let data_offset = offset + (LOCAL_LEN + name_len + extra_len) as u64;
        expected_offset = data_offset
            .checked_add(size)
            .filter(|&end| end <= cd_offset)
            .ok_or_else(|| {
                format!("{at_name}: declared size {size} runs into the central directory")
            })?;
        total_bytes = total_bytes.saturating_add(size);
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
