//! Test helpers: a small HTTP/1.1 server on 127.0.0.1 (range requests, a connection cut
//! halfway, 404) and builders of archives in each dataset's real format.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the server answers one path.
#[derive(Clone)]
pub struct Served {
    pub body: Vec<u8>,
    /// Cut the connection after this many body bytes, for the first `cuts` responses.
    pub cut_at: Option<usize>,
    pub cuts: usize,
}

/// One request as the server saw it: path and Range header.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
}

pub struct Server {
    pub base: String,
    files: Arc<Mutex<HashMap<String, Served>>>,
    pub log: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let files: Arc<Mutex<HashMap<String, Served>>> = Default::default();
        let log: Arc<Mutex<Vec<Seen>>> = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (f, l, s) = (files.clone(), log.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let _ = handle(c, &f, &l);
                }
            }
        });
        Self {
            base,
            files,
            log,
            stop,
            handle: Some(handle),
        }
    }

    pub fn serve(&self, path: &str, body: Vec<u8>) {
        self.serve_cut(path, body, None, 0);
    }

    pub fn serve_cut(&self, path: &str, body: Vec<u8>, cut_at: Option<usize>, cuts: usize) {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_string(), Served { body, cut_at, cuts });
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn handle(
    mut c: TcpStream,
    files: &Mutex<HashMap<String, Served>>,
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    log.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
    });
    let served = {
        let mut map = files.lock().unwrap();
        match map.get_mut(&path) {
            None => None,
            Some(s) => {
                let cut = if s.cuts > 0 {
                    s.cuts -= 1;
                    s.cut_at
                } else {
                    None
                };
                Some((s.body.clone(), cut))
            }
        }
    };
    let Some((body, cut)) = served else {
        c.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        )?;
        return Ok(());
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
    let (status, from) = match start {
        Some(s) if s >= body.len() => {
            c.write_all(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
        Some(s) => ("206 Partial Content", s),
        None => ("200 OK", 0),
    };
    let rest = &body[from..];
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
        rest.len()
    );
    if from > 0 {
        head.push_str(&format!(
            "Content-Range: bytes {from}-{}/{}\r\n",
            body.len() - 1,
            body.len()
        ));
    }
    head.push_str("\r\n");
    c.write_all(head.as_bytes())?;
    match cut {
        Some(n) if n < rest.len() => {
            c.write_all(&rest[..n])?;
            c.flush()?;
            // Drop without sending the rest: the client sees a short body.
        }
        _ => c.write_all(rest)?,
    }
    Ok(())
}

pub fn md5_hex(b: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(b))
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(b))
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A `.tar.gz` of `(path, bytes)` files.
pub fn tar_gz(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, p, &data[..]).unwrap();
    }
    gzip(&b.into_inner().unwrap())
}

/// A `.tar.gz` with one entry whose raw name is written as is (no checks), of type `kind`.
pub fn tar_gz_raw_entry(name: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    let bytes = name.as_bytes();
    h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
    h.set_entry_type(kind);
    h.set_size(if kind == tar::EntryType::Regular {
        4
    } else {
        0
    });
    h.set_mode(0o644);
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    if kind == tar::EntryType::Regular {
        let mut block = [0u8; 512];
        block[..4].copy_from_slice(b"evil");
        out.extend_from_slice(&block);
    }
    out.extend_from_slice(&[0u8; 1024]);
    gzip(&out)
}

/// A `.zip` of `(path, bytes)` files.
pub fn zip_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (p, data) in files {
        w.start_file(*p, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// CIFAR-10 binary records: image `i` has label `i % 10` and every pixel of channel `c` equal
/// to `(i * 7 + c * 50 + 1) % 256`, with pixel (0, 1) of the R plane set to 255 (to see flips).
pub fn cifar10_records(n: usize, offset: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for k in 0..n {
        let i = k + offset;
        out.push((i % 10) as u8);
        for c in 0..3 {
            let mut plane = vec![((i * 7 + c * 50 + 1) % 256) as u8; 1024];
            if c == 0 {
                plane[1] = 255;
            }
            out.extend_from_slice(&plane);
        }
    }
    out
}

/// A real-format CIFAR-10 archive with `per_file` images in each of the six batch files.
pub fn cifar10_archive(per_file: usize) -> Vec<u8> {
    let mut files = Vec::new();
    let names: Vec<String> = (1..=5)
        .map(|i| format!("cifar-10-batches-bin/data_batch_{i}.bin"))
        .chain(["cifar-10-batches-bin/test_batch.bin".to_string()])
        .collect();
    for (k, n) in names.iter().enumerate() {
        files.push((n.as_str(), cifar10_records(per_file, k * per_file)));
    }
    files.push((
        "cifar-10-batches-bin/batches.meta.txt",
        b"airplane\n".to_vec(),
    ));
    tar_gz(&files)
}

/// IDX images (`n` images `rows × cols`, pixel = (i + r + c) % 256) and labels (i % 10).
pub fn idx_pair(n: usize, rows: usize, cols: usize) -> (Vec<u8>, Vec<u8>) {
    let mut img = vec![0, 0, 8, 3];
    for v in [n, rows, cols] {
        img.extend_from_slice(&(v as u32).to_be_bytes());
    }
    for i in 0..n {
        for r in 0..rows {
            for c in 0..cols {
                img.push(((i + r + c) % 256) as u8);
            }
        }
    }
    let mut lbl = vec![0, 0, 8, 1];
    lbl.extend_from_slice(&(n as u32).to_be_bytes());
    lbl.extend((0..n).map(|i| (i % 10) as u8));
    (img, lbl)
}

/// A PNG or JPEG of `side × side`, RGB or grayscale, with value `v`.
pub fn encode_image(side: u32, v: u8, gray: bool, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    if gray {
        image::GrayImage::from_pixel(side, side, image::Luma([v]))
            .write_to(&mut out, format)
            .unwrap();
    } else {
        image::RgbImage::from_pixel(side, side, image::Rgb([v, v / 2, 255 - v]))
            .write_to(&mut out, format)
            .unwrap();
    }
    out.into_inner()
}

/// Fetch options for tests: everything under `root`, quick retries, no progress bar, no
/// Debian shortcut.
pub fn opts(root: &std::path::Path) -> kd_data::fetch::FetchOptions {
    kd_data::fetch::FetchOptions {
        root: root.to_path_buf(),
        attempts: 1,
        retry_delay: Duration::from_millis(10),
        progress: false,
        prefer_debian: false,
        ..Default::default()
    }
}

/// Leaks a string (the registry's records hold `&'static str`).
pub fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Lists every path under `dir` (relative), sorted.
pub fn tree(dir: &std::path::Path) -> Vec<String> {
    fn walk(base: &std::path::Path, d: &std::path::Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(base).unwrap().display().to_string());
                if p.is_dir() {
                    walk(base, &p, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
