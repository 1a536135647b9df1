//! A reader for the numeric matrices of MATLAB level-5 `.mat` files (what SVHN ships): a
//! 128-byte header, then data elements; `miMATRIX` elements hold flags, dimensions, a name and
//! the real part; `miCOMPRESSED` elements are zlib streams holding one such element.

use crate::error::{format_err, Result};
use flate2::read::ZlibDecoder;
use std::io::Read;
use std::path::Path;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// One numeric array: its name, its dimensions (MATLAB order, column-major data), and its
/// values as f64 (every SVHN value is an exact small integer).
#[derive(Debug, Clone)]
pub struct MatArray {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: MatData,
}

/// The stored values: bytes are kept as bytes (SVHN's 225 MB of pixels), everything else as f64.
#[derive(Debug, Clone)]
pub enum MatData {
    U8(Vec<u8>),
    F64(Vec<f64>),
}

impl MatData {
    pub fn len(&self) -> usize {
        match self {
            MatData::U8(v) => v.len(),
            MatData::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    swap: bool,
}

impl<'a> Cursor<'a> {
    fn u32(&mut self) -> Option<u32> {
        let b: [u8; 4] = self.buf.get(self.pos..self.pos + 4)?.try_into().ok()?;
        self.pos += 4;
        Some(if self.swap {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    /// Reads a tag and returns (type, payload, padded): small elements pack their ≤4 bytes in
    /// the tag; the others are padded to 8 bytes, except compressed ones.
    fn element(&mut self) -> Option<(u32, &'a [u8])> {
        let first = self.u32()?;
        if first >> 16 != 0 {
            let (ty, n) = (first & 0xffff, (first >> 16) as usize);
            let data = self.buf.get(self.pos..self.pos + n.min(4))?;
            self.pos += 4;
            return Some((ty, &data[..n]));
        }
        let n = self.u32()? as usize;
        let data = self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        if first != MI_COMPRESSED {
            self.pos += (8 - n % 8) % 8;
        }
        Some((first, data))
    }
}

fn numbers(ty: u32, b: &[u8], swap: bool) -> Option<MatData> {
    macro_rules! conv {
        ($t:ty, $n:literal) => {
            b.chunks_exact($n)
                .map(|c| {
                    let a: [u8; $n] = c.try_into().unwrap();
                    (if swap {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    }) as f64
                })
                .collect()
        };
    }
    Some(match ty {
        MI_UINT8 => MatData::U8(b.to_vec()),
        MI_INT8 => MatData::F64(b.iter().map(|&v| v as i8 as f64).collect()),
        MI_INT16 => MatData::F64(conv!(i16, 2)),
        MI_UINT16 => MatData::F64(conv!(u16, 2)),
        MI_INT32 => MatData::F64(conv!(i32, 4)),
        MI_UINT32 => MatData::F64(conv!(u32, 4)),
        MI_SINGLE => MatData::F64(conv!(f32, 4)),
        MI_DOUBLE => MatData::F64(conv!(f64, 8)),
        MI_INT64 => MatData::F64(conv!(i64, 8)),
        MI_UINT64 => MatData::F64(conv!(u64, 8)),
        _ => return None,
    })
}

fn parse_matrix(path: &Path, body: &[u8], swap: bool) -> Result<Option<MatArray>> {
    let bad = |m: &str| format_err(path, format!("malformed miMATRIX element: {m}"));
    let mut c = Cursor {
        buf: body,
        pos: 0,
        swap,
    };
    let (_, flags) = c.element().ok_or_else(|| bad("no array flags"))?;
    let class = flags.first().copied().unwrap_or(0);
    let complex = flags.get(1).is_some_and(|f| f & 0x08 != 0);
    // Numeric classes are 6 (double) ..= 15 (uint64); cells, structs, chars, sparse are skipped.
    if !(6..=15).contains(&class) || complex {
        return Ok(None);
    }
    let (dty, dims) = c.element().ok_or_else(|| bad("no dimensions"))?;
    if dty != MI_INT32 {
        return Err(bad("dimensions are not miINT32"));
    }
    let dims: Vec<usize> = match numbers(MI_INT32, dims, swap) {
        Some(MatData::F64(v)) => v.iter().map(|&d| d as usize).collect(),
        _ => return Err(bad("unreadable dimensions")),
    };
    let (_, name) = c.element().ok_or_else(|| bad("no array name"))?;
    let name = String::from_utf8_lossy(name).into_owned();
    let (ty, real) = c
        .element()
        .ok_or_else(|| bad(&format!("`{name}` has no data (truncated file?)")))?;
    let data = numbers(ty, real, swap)
        .ok_or_else(|| bad(&format!("`{name}` has unsupported data type {ty}")))?;
    let want: usize = dims.iter().product();
    if data.len() != want {
        return Err(format_err(
            path,
            format!(
                "`{name}` has {} values, its dimensions {dims:?} need {want}",
                data.len()
            ),
        ));
    }
    Ok(Some(MatArray { name, dims, data }))
}

/// Reads every numeric array of a level-5 `.mat` file held in `bytes`.
pub fn read_mat(path: &Path, bytes: &[u8]) -> Result<Vec<MatArray>> {
    if bytes.len() < 128 {
        return Err(format_err(
            path,
            "too short for a MATLAB 5 header (128 bytes)",
        ));
    }
    let swap = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        _ => {
            return Err(format_err(
                path,
                "not a MATLAB 5 .mat file (no IM/MI endian mark at byte 126)",
            ))
        }
    };
    if bytes.starts_with(b"\x89HDF") || bytes[..116].starts_with(b"MATLAB 7.3") {
        return Err(format_err(
            path,
            "MATLAB 7.3 (HDF5) files are not supported",
        ));
    }
    let mut out = Vec::new();
    let mut c = Cursor {
        buf: bytes,
        pos: 128,
        swap,
    };
    while c.pos < bytes.len() {
        let at = c.pos;
        let (ty, body) = c.element().ok_or_else(|| {
            format_err(
                path,
                format!("truncated data element at byte {at} of {}", bytes.len()),
            )
        })?;
        match ty {
            MI_MATRIX => out.extend(parse_matrix(path, body, swap)?),
            MI_COMPRESSED => {
                let mut inner = Vec::new();
                ZlibDecoder::new(body)
                    .read_to_end(&mut inner)
                    .map_err(|e| {
                        format_err(
                            path,
                            format!("corrupt compressed element at byte {at}: {e}"),
                        )
                    })?;
                let mut ic = Cursor {
                    buf: &inner,
                    pos: 0,
                    swap,
                };
                let (ity, ibody) = ic.element().ok_or_else(|| {
                    format_err(path, format!("empty compressed element at byte {at}"))
                })?;
                if ity == MI_MATRIX {
                    out.extend(parse_matrix(path, ibody, swap)?);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}
