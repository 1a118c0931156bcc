//! Arrow IPC and Parquet files as records. The decoders come from third parties and trust the
//! sizes a file states; every such size is checked against the file first, and a decoder's panic
//! on a corrupt file becomes an error naming the file.

use super::Record;
use crate::error::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde_json::{Map, Value};
use std::io::Read;
use std::path::Path;

/// sees one error naming the file.
fn guarded<T>(path: &Path, format: &str, decode: impl FnOnce() -> Result<T>) -> Result<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode));
    std::panic::set_hook(hook);
    result.unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the decoder failed".into());
        Err(Error::bad_input(format!("{}: cannot read {format} data: the file is corrupt ({reason})", path.display())))
    })
}

pub(super) fn read_arrow(path: &Path) -> Result<Vec<Record>> {
    guarded(path, "Arrow", || read_arrow_unguarded(path))
}

fn read_arrow_unguarded(path: &Path) -> Result<Vec<Record>> {
    let fail = |e: &dyn std::fmt::Display| Error::bad_input(format!("{}: cannot read Arrow data: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let mut reader = std::io::BufReader::new(file);
    // The IPC file format starts with the magic "ARROW1"; `save_to_disk` writes the stream format.
    let mut magic = [0u8; 6];
    let is_file_format = reader.read_exact(&mut magic).is_ok() && &magic == b"ARROW1";
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let limit = row_limit(&file).map_err(|e| fail(&e))?;
    let batches: Vec<RecordBatch> = if is_file_format {
        check_ipc_file_layout(&file).map_err(|e| fail(&e))?;
        let reader = arrow_ipc::reader::FileReader::try_new(file, None).map_err(|e| fail(&e))?;
        collect_batches(reader, limit).map_err(|e| fail(&e))?
    } else {
        let reader = arrow_ipc::reader::StreamReader::try_new(std::io::BufReader::new(file), None).map_err(|e| fail(&e))?;
        collect_batches(reader, limit).map_err(|e| fail(&e))?
    };
    batches_to_records(&batches).map_err(|e| fail(&e))
}

/// The most rows a data file of this size can hold. Every record becomes a JSON object, but a
/// column of nulls (or a run-length encoded one) costs the file nothing per row, so a tiny corrupt
/// file could claim billions of rows. Any column with data takes at least a bit per row.
fn row_limit(file: &std::fs::File) -> std::result::Result<usize, String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    Ok(usize::try_from(len).unwrap_or(usize::MAX).saturating_mul(8).saturating_add(4096))
}

fn too_many_rows(rows: impl std::fmt::Display, limit: usize) -> String {
    format!("the file claims {rows} rows, more than its size can hold (at most {limit}); it is corrupt")
}

/// Record batches, refused as soon as they hold more rows than `limit`.
fn collect_batches(
    reader: impl Iterator<Item = std::result::Result<RecordBatch, arrow_schema::ArrowError>>,
    limit: usize,
) -> std::result::Result<Vec<RecordBatch>, String> {
    let mut rows = 0usize;
    let mut batches = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        rows = rows.saturating_add(batch.num_rows());
        if rows > limit {
            return Err(too_many_rows(format!("at least {rows}"), limit));
        }
        batches.push(batch);
    }
    Ok(batches)
}

/// The Arrow IPC file format ends with its footer's length and the magic; the footer lists the
/// blocks (offset, metadata and body lengths) of the record batches and dictionaries. arrow-ipc
/// allocates the footer and each block at the size stated before reading it, so every length is
/// checked against the file's size here first: a corrupt file costs an error, not the allocation
/// it asks for.
fn check_ipc_file_layout(file: &std::fs::File) -> std::result::Result<(), String> {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut reader = file;
    let mut tail = [0u8; 10];
    if len < 16 || reader.seek(SeekFrom::End(-10)).is_err() || reader.read_exact(&mut tail).is_err() || &tail[4..] != b"ARROW1" {
        return Err("not a complete Arrow IPC file (no footer)".into());
    }
    let footer_len = i32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let footer_len = u64::try_from(footer_len).ok().filter(|&n| n <= len - 16).ok_or_else(|| {
        format!("the footer claims {footer_len} bytes, but the file has {len} (the file is truncated or corrupt)")
    })?;
    let mut footer = vec![0u8; footer_len as usize];
    reader.seek(SeekFrom::End(-10 - footer_len as i64)).map_err(|e| e.to_string())?;
    reader.read_exact(&mut footer).map_err(|e| e.to_string())?;
    let footer = arrow_ipc::root_as_footer(&footer).map_err(|e| format!("corrupt footer: {e}"))?;
    let blocks = footer.recordBatches().into_iter().chain(footer.dictionaries()).flatten();
    for block in blocks {
        let end = u64::try_from(block.offset()).ok().and_then(|offset| {
            let meta = u64::try_from(block.metaDataLength()).ok()?;
            let body = u64::try_from(block.bodyLength()).ok()?;
            offset.checked_add(meta)?.checked_add(body)
        });
        if end.is_none_or(|end| end > len) {
            return Err(format!(
                "a block at offset {} with {} metadata and {} body bytes lies outside the {len}-byte file (the file is \
                 truncated or corrupt)",
                block.offset(),
                block.metaDataLength(),
                block.bodyLength()
            ));
        }
    }
    Ok(())
}

pub(super) fn read_parquet(path: &Path) -> Result<Vec<Record>> {
    guarded(path, "Parquet", || read_parquet_unguarded(path))
}

fn read_parquet_unguarded(path: &Path) -> Result<Vec<Record>> {
    let fail = |e: &dyn std::fmt::Display| Error::bad_input(format!("{}: cannot read Parquet data: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| fail(&e))?;
    check_parquet_pages(path, builder.metadata()).map_err(|e| fail(&e))?;
    let limit = row_limit(&std::fs::File::open(path).map_err(|e| fail(&e))?).map_err(|e| fail(&e))?;
    let claimed: i128 = builder.metadata().row_groups().iter().map(|g| i128::from(g.num_rows())).sum();
    if claimed < 0 || claimed > limit as i128 {
        return Err(fail(&too_many_rows(claimed, limit)));
    }
    let reader = builder.build().map_err(|e| fail(&e))?;
    let batches = collect_batches(reader, limit).map_err(|e| fail(&e))?;
    batches_to_records(&batches).map_err(|e| fail(&e))
}

/// The parquet reader allocates each compressed page's `uncompressed_page_size` (from the page's
/// own header) before decompressing it, so a small corrupt file could ask for gigabytes. Every
/// page header of every column chunk is read here first (the chunks must lie within the file),
/// and a compressed page may claim at most what its codec can expand it to: Snappy, the one codec
/// perplex reads, expands by at most 64 bytes per 3-byte copy (about 21x). The parquet metadata
/// itself is checked against the file's size by the parquet reader.
fn check_parquet_pages(path: &Path, metadata: &parquet::file::metadata::ParquetMetaData) -> std::result::Result<(), String> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for (c, column) in group.columns().iter().enumerate() {
            let snappy = column.compression() == parquet::basic::Compression::SNAPPY;
            let start = column.dictionary_page_offset().unwrap_or(column.data_page_offset());
            let (Ok(start), Ok(len)) = (u64::try_from(start), u64::try_from(column.compressed_size())) else {
                return Err(format!("row group {g}, column {c}: negative offset or size"));
            };
            if start.checked_add(len).is_none_or(|end| end > file_len) {
                return Err(format!(
                    "row group {g}, column {c}: {len} bytes at offset {start} lie beyond the end of the {file_len}-byte file"
                ));
            }
            if !snappy {
                continue;
            }
            file.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
            let mut chunk = vec![0u8; len as usize];
            file.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            let mut pos = 0usize;
            while pos < chunk.len() {
                let mut header = Thrift { bytes: &chunk[pos..], pos: 0 };
                // A header that a strict reading cannot parse is refused rather than left to the
                // reader's own (more lenient) parser.
                let Some((uncompressed, compressed)) = header.page_sizes() else {
                    return Err(format!("row group {g}, column {c}: corrupt page header at byte {}", start + pos as u64));
                };
                let page_end = pos.checked_add(header.pos).and_then(|p| p.checked_add(usize::try_from(compressed).ok()?));
                if uncompressed < 0 || compressed < 0 || (uncompressed as u64) > 22 * compressed as u64 + 1024 {
                    return Err(format!(
                        "row group {g}, column {c}: a Snappy page of {compressed} bytes claims {uncompressed} bytes \
                         uncompressed (the file is corrupt)"
                    ));
                }
                match page_end {
                    Some(end) if end <= chunk.len() => pos = end,
                    // The parquet reader reports a page that overruns its chunk.
                    _ => break,
                }
            }
        }
    }
    Ok(())
}

/// Just enough of Thrift's compact protocol to read `uncompressed_page_size` (field 2) and
/// `compressed_page_size` (field 3) of a parquet `PageHeader` and step over everything else.
struct Thrift<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Thrift<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn zigzag(&mut self) -> Option<i64> {
        let v = self.varint()?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn skip(&mut self, n: u64) -> Option<()> {
        self.pos = self.pos.checked_add(usize::try_from(n).ok()?).filter(|&p| p <= self.bytes.len())?;
        Some(())
    }

    /// Steps over one value of compact type `kind`.
    fn skip_value(&mut self, kind: u8, depth: usize) -> Option<()> {
        if depth > 32 {
            return None;
        }
        match kind {
            1 | 2 => Some(()),
            3 => self.skip(1),
            4..=6 => self.zigzag().map(drop),
            7 => self.skip(8),
            8 => {
                let n = self.varint()?;
                self.skip(n)
            }
            9 | 10 => {
                let head = self.byte()?;
                let n = if head >> 4 == 15 { self.varint()? } else { u64::from(head >> 4) };
                let element = head & 0x0f;
                for _ in 0..n {
                    if element == 1 || element == 2 {
                        self.skip(1)?;
                    } else {
                        self.skip_value(element, depth + 1)?;
                    }
                }
                Some(())
            }
            11 => {
                let n = self.varint()?;
                if n > 0 {
                    let kinds = self.byte()?;
                    for _ in 0..n {
                        self.skip_value(kinds >> 4, depth + 1)?;
                        self.skip_value(kinds & 0x0f, depth + 1)?;
                    }
                }
                Some(())
            }
            12 => self.skip_struct(depth + 1, |_, _, _| None).map(drop),
            _ => None,
        }
    }

    /// Reads a struct's fields, handing each (id, kind) to `field` first: it returns Some(())
    /// when it consumed the value itself.
    fn skip_struct(&mut self, depth: usize, mut field: impl FnMut(&mut Self, i16, u8) -> Option<()>) -> Option<()> {
        let mut id = 0i16;
        loop {
            let head = self.byte()?;
            if head == 0 {
                return Some(());
            }
            let kind = head & 0x0f;
            id = match head >> 4 {
                0 => i16::try_from(self.zigzag()?).ok()?,
                delta => id.checked_add(i16::from(delta))?,
            };
            if field(self, id, kind).is_none() {
                self.skip_value(kind, depth)?;
            }
        }
    }

    /// (uncompressed_page_size, compressed_page_size) of the PageHeader at the cursor, which is
    /// left just after the header. Strict: both fields present once each, as i32 values; None
    /// for anything else.
    fn page_sizes(&mut self) -> Option<(i64, i64)> {
        let (mut uncompressed, mut compressed) = (None, None);
        let mut malformed = false;
        self.skip_struct(0, |t, id, kind| {
            let slot = match id {
                2 => &mut uncompressed,
                3 => &mut compressed,
                _ => return None,
            };
            let value = if kind == 5 { t.zigzag().filter(|v| i32::try_from(*v).is_ok()) } else { None };
            match value {
                Some(v) if slot.is_none() => *slot = Some(v),
                _ => malformed = true,
            }
            // Consumed (or malformed: stop reading).
            if malformed {
                t.pos = t.bytes.len() + 1;
            }
            Some(())
        });
        if malformed {
            return None;
        }
        Some((uncompressed?, compressed?))
    }
}

fn batches_to_records(batches: &[RecordBatch]) -> std::result::Result<Vec<Record>, String> {
    let mut records = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut record = Map::new();
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                record.insert(field.name().clone(), arrow_value(column.as_ref(), row)?);
            }
            records.push(record);
        }
    }
    Ok(records)
}

/// One cell as JSON, for the column types `datasets` writes (Value, Sequence, ClassLabel, nested
/// features).
fn arrow_value(array: &dyn Array, row: usize) -> std::result::Result<Value, String> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    fn number(x: f64) -> Value {
        serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
    }
    Ok(match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        DataType::Float16 => number(array.as_primitive::<Float16Type>().value(row).to_f64()),
        DataType::Float32 => number(array.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Float64 => number(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        DataType::List(_) => list_value(array.as_list::<i32>().value(row).as_ref())?,
        DataType::LargeList(_) => list_value(array.as_list::<i64>().value(row).as_ref())?,
        DataType::FixedSizeList(_, _) => list_value(array.as_fixed_size_list().value(row).as_ref())?,
        DataType::Struct(fields) => {
            let array = array.as_struct();
            let mut map = Map::new();
            for (field, column) in fields.iter().zip(array.columns()) {
                map.insert(field.name().clone(), arrow_value(column.as_ref(), row)?);
            }
            Value::Object(map)
        }
        other => return Err(format!("column type {other} is not supported (convert the column to strings or numbers)")),
    })
}

fn list_value(values: &dyn Array) -> std::result::Result<Value, String> {
    (0..values.len()).map(|i| arrow_value(values, i)).collect::<std::result::Result<Vec<_>, _>>().map(Value::Array)
}
