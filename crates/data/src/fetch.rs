//! Verified, resumable, atomic dataset downloads (`cargo xtask fetch-data`).
//!
//! A file is streamed to `<root>/.downloads/<file>.part` (resumed with an HTTP range request when
//! a previous attempt was cut), verified, and only then renamed to its final name. Archives are
//! unpacked into `<root>/.staging-<name>-<pid>/`, which is renamed to `<root>/<name>/` when
//! complete; entries that would land outside it (absolute paths, `..`, links) are refused. A
//! record of what was verified, `<root>/<name>/VERIFIED.json`, makes a second run a no-op.

use crate::error::{format_err, DataError, IoContext, Result};
use crate::registry::{Checksum, DatasetName, RemoteFile, Unpack};
use md5::{Digest, Md5};
use sha2::Sha256;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The record written last into a complete dataset folder.
pub const RECORD: &str = "VERIFIED.json";

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The datasets folder (`datasets/`): the dataset lands in `<root>/<name>/`.
    pub root: PathBuf,
    /// Import from a local archive/file or a folder holding the published files instead of
    /// downloading.
    pub from: Option<PathBuf>,
    /// Replaces the scheme and host of every official address (the path is kept).
    pub mirror: Option<String>,
    /// Download attempts per file; each later attempt resumes where the previous was cut.
    pub attempts: usize,
    /// Pause before a retry.
    pub retry_delay: Duration,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// SVHN: also fetch the 531,131-image `extra` split.
    pub svhn_extra: bool,
    /// Fashion-MNIST: import from Debian's `dataset-fashion-mnist` when it is installed and no
    /// `from`/`mirror` is given, instead of downloading.
    pub prefer_debian: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            root: crate::dataset::default_root(),
            from: None,
            mirror: None,
            attempts: 3,
            retry_delay: Duration::from_secs(2),
            progress: true,
            svhn_extra: false,
            prefer_debian: true,
        }
    }
}

/// What a fetch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    AlreadyPresent,
    Downloaded,
    Imported,
}

/// How to get a dataset when it is missing (used in error messages).
pub fn fetch_hint(name: DatasetName) -> String {
    let mut s = format!("run `cargo xtask fetch-data {name}`");
    if name == DatasetName::FashionMnist {
        s.push_str(
            "; offline, `apt-get install dataset-fashion-mnist` provides it \
             (then `cargo xtask fetch-data fashion-mnist` imports it)",
        );
    }
    s
}

/// The files to fetch for `name` under `opts`.
pub fn files_for(name: DatasetName, opts: &FetchOptions) -> Vec<RemoteFile> {
    let mut files = name.info().files.to_vec();
    if name == DatasetName::Svhn && opts.svhn_extra {
        files.push(crate::registry::SVHN_EXTRA_FILE);
    }
    files
}

/// Fetches `name` with its official files.
pub fn fetch(name: DatasetName, opts: &FetchOptions) -> Result<Outcome> {
    let mut opts = opts.clone();
    if let (true, None, None, Some(deb)) = (
        opts.prefer_debian,
        &opts.from,
        &opts.mirror,
        name.debian_path(),
    ) {
        let deb = Path::new(deb);
        if name
            .info()
            .files
            .iter()
            .all(|f| deb.join(f.file_name()).is_file())
        {
            opts.from = Some(deb.to_path_buf());
        }
    }
    fetch_files(name, &files_for(name, &opts), &opts).map_err(|e| match (name, &e) {
        (DatasetName::FashionMnist, DataError::Http { url, msg }) => DataError::Http {
            url: url.clone(),
            msg: format!(
                "{msg}. Offline, `apt-get install dataset-fashion-mnist` provides the real \
                 Fashion-MNIST; then run `cargo xtask fetch-data fashion-mnist` again"
            ),
        },
        _ => e,
    })
}

/// True when `<root>/<name>/VERIFIED.json` lists every file in `files`.
pub fn is_present(root: &Path, name: DatasetName, files: &[RemoteFile]) -> bool {
    let Ok(text) = fs::read_to_string(root.join(name.as_str()).join(RECORD)) else {
        return false;
    };
    let Ok(rec) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    let listed: Vec<&str> = rec["files"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["file"].as_str()).collect())
        .unwrap_or_default();
    files.iter().all(|f| listed.contains(&f.file_name()))
}

/// Fetches `files` (normally the registry's) for `name` into `<root>/<name>/`.
pub fn fetch_files(
    name: DatasetName,
    files: &[RemoteFile],
    opts: &FetchOptions,
) -> Result<Outcome> {
    let dest = opts.root.join(name.as_str());
    if is_present(&opts.root, name, files) {
        log::info!("{name}: already present in {} (verified)", dest.display());
        return Ok(Outcome::AlreadyPresent);
    }
    let downloads = opts.root.join(".downloads");
    fs::create_dir_all(&downloads).at(&downloads)?;
    // 1. Every file verified, locally or downloaded.
    let mut sources = Vec::new();
    for f in files {
        let src = match &opts.from {
            Some(from) => {
                let p = local_source(from, f, files.len())?;
                log::info!("{name}: verifying {}", p.display());
                verify(&p, f.checksum)?;
                p
            }
            None => {
                let done = downloads.join(f.file_name());
                if !done.is_file() {
                    let url = match &opts.mirror {
                        Some(m) => mirror_url(f.url, m),
                        None => f.url.to_string(),
                    };
                    download(&url, &done, f.checksum, f.size, opts)?;
                }
                done
            }
        };
        sources.push((f, src));
    }
    // 2. Unpack or copy into a staging folder, record, rename into place.
    let staging = opts
        .root
        .join(format!(".staging-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).at(&staging)?;
    let result = (|| {
        for (f, src) in &sources {
            log::info!("{name}: unpacking {}", src.display());
            match f.unpack {
                Unpack::TarGz => extract_tar_gz(src, &staging)?,
                Unpack::Zip => extract_zip(src, &staging)?,
                Unpack::Keep => {
                    let to = staging.join(f.file_name());
                    fs::copy(src, &to).at(&to)?;
                }
            }
        }
        write_record(&staging, name, files, opts)
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&staging);
        if opts.from.is_none() {
            // A verified download that does not unpack is of no use to a later run.
            for (_, src) in &sources {
                let _ = fs::remove_file(src);
            }
        }
        return Err(e);
    }
    if dest.exists() {
        // An earlier incomplete attempt: it has no complete record, so nothing in it was used.
        fs::remove_dir_all(&dest).at(&dest)?;
    }
    fs::rename(&staging, &dest).at(&dest)?;
    if opts.from.is_none() {
        for (_, src) in &sources {
            let _ = fs::remove_file(src);
        }
    }
    log::info!("{name}: ready in {}", dest.display());
    Ok(if opts.from.is_some() {
        Outcome::Imported
    } else {
        Outcome::Downloaded
    })
}

/// The local file for `f` when importing from `from`: `from` itself when it is a file (and the
/// dataset has one file, or its name matches), else `from/<file name>`.
fn local_source(from: &Path, f: &RemoteFile, n_files: usize) -> Result<PathBuf> {
    if from.is_file() {
        if n_files == 1 || from.file_name().is_some_and(|n| n == f.file_name()) {
            return Ok(from.to_path_buf());
        }
        return Err(DataError::Invalid(format!(
            "--from {}: this dataset has {n_files} files; pass the folder that holds {}",
            from.display(),
            f.file_name()
        )));
    }
    let p = from.join(f.file_name());
    if p.is_file() {
        Ok(p)
    } else {
        Err(DataError::Invalid(format!(
            "--from {}: expected the published file {} there",
            from.display(),
            f.file_name()
        )))
    }
}

fn write_record(
    dir: &Path,
    name: DatasetName,
    files: &[RemoteFile],
    opts: &FetchOptions,
) -> Result<()> {
    let files: Vec<_> = files
        .iter()
        .map(|f| {
            let (algo, sum) = match f.checksum {
                Checksum::Md5(s) => ("md5", s),
                Checksum::Sha256Gunzipped(s) => ("sha256-of-gunzipped", s),
            };
            serde_json::json!({"file": f.file_name(), "url": f.url, algo: sum})
        })
        .collect();
    let source = match (&opts.from, &opts.mirror) {
        (Some(p), _) => p.display().to_string(),
        (None, Some(m)) => m.clone(),
        (None, None) => "official addresses".into(),
    };
    let rec = serde_json::json!({"dataset": name.as_str(), "source": source, "files": files});
    let path = dir.join(RECORD);
    fs::write(&path, serde_json::to_string_pretty(&rec).expect("json")).at(&path)
}

/// `url` with its scheme and host replaced by `mirror` (a trailing `/` on the mirror is
/// ignored): `https://www.cs.toronto.edu/~kriz/x.tar.gz` with `http://m:8000/data` gives
/// `http://m:8000/data/~kriz/x.tar.gz`.
pub fn mirror_url(url: &str, mirror: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    format!("{}{path}", mirror.trim_end_matches('/'))
}

/// Checks `path` against `sum`; a mismatch removes nothing (the caller decides).
pub fn checksum_of(path: &Path, sum: Checksum) -> Result<String> {
    let file = File::open(path).at(path)?;
    let mut buf = vec![0u8; 1 << 20];
    fn pump(mut r: impl Read, buf: &mut [u8], mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
        loop {
            let n = r.read(buf)?;
            if n == 0 {
                return Ok(());
            }
            f(&buf[..n]);
        }
    }
    Ok(match sum {
        Checksum::Md5(_) => {
            let mut h = Md5::new();
            pump(file, &mut buf, |b| h.update(b)).at(path)?;
            hex::encode(h.finalize())
        }
        Checksum::Sha256Gunzipped(_) => {
            let mut h = Sha256::new();
            pump(
                flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)),
                &mut buf,
                |b| h.update(b),
            )
            .map_err(|e| format_err(path, format!("corrupt or truncated gzip data: {e}")))?;
            hex::encode(h.finalize())
        }
    })
}

/// Verifies `path` against `sum`, with an error naming the file and both values.
pub fn verify(path: &Path, sum: Checksum) -> Result<()> {
    let got = checksum_of(path, sum)?;
    let (algo, want) = match sum {
        Checksum::Md5(s) => ("md5", s),
        Checksum::Sha256Gunzipped(s) => ("sha256 (of the decompressed data)", s),
    };
    if got.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(DataError::Checksum {
            path: path.to_path_buf(),
            algo,
            expected: want.to_string(),
            got,
        })
    }
}

fn part_path(done: &Path) -> PathBuf {
    let mut s = done.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Downloads `url` to `done` through `done.part`, resuming a cut transfer with range requests,
/// verifies it and renames it into place. A checksum mismatch deletes the partial file.
pub fn download(
    url: &str,
    done: &Path,
    sum: Checksum,
    size: Option<u64>,
    opts: &FetchOptions,
) -> Result<()> {
    let part = part_path(done);
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .build();
    let http = |msg: String| DataError::Http {
        url: url.to_string(),
        msg,
    };
    let mut last = String::new();
    let attempts = opts.attempts.max(1);
    for attempt in 1..=attempts {
        if attempt > 1 {
            std::thread::sleep(opts.retry_delay);
        }
        let have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let mut req = agent.get(url);
        if have > 0 {
            log::info!("resuming {url} at byte {have}");
            req = req.set("Range", &format!("bytes={have}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(416, _)) if have > 0 => {
                // The server has nothing past what we hold: the partial file is complete or
                // corrupt, which verification decides.
                break;
            }
            Err(ureq::Error::Status(code, r)) => {
                let _ = fs::remove_file(&part);
                return Err(http(format!("HTTP {code} {}", r.status_text())));
            }
            Err(e) => {
                last = e.to_string();
                log::warn!("{url}: attempt {attempt}/{attempts} failed: {last}");
                continue;
            }
        };
        let resumed = resp.status() == 206;
        let start = if resumed { have } else { 0 };
        let total = resp
            .header("Content-Length")
            .and_then(|l| l.parse::<u64>().ok())
            .map(|l| l + start)
            .or(size);
        let mut file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&part)
            .at(&part)?;
        let bar = progress_bar(opts.progress, total, done);
        bar.set_position(start);
        let mut reader = resp.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut written = start;
        let cut = loop {
            match reader.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    file.write_all(&buf[..n]).at(&part)?;
                    written += n as u64;
                    bar.set_position(written);
                }
                Err(e) => break Some(e.to_string()),
            }
        };
        bar.finish_and_clear();
        file.sync_all().at(&part)?;
        match (cut, total) {
            (None, Some(t)) if written < t => {
                last = format!("connection closed after {written} of {t} bytes")
            }
            (None, _) => {
                last.clear();
                break;
            }
            (Some(e), _) => last = format!("interrupted after {written} bytes: {e}"),
        }
        log::warn!("{url}: attempt {attempt}/{attempts}: {last}");
    }
    if !last.is_empty() {
        return Err(http(format!(
            "gave up after {attempts} attempt(s): {last}; the partial download is kept at {} \
             and the next run resumes it",
            part.display()
        )));
    }
    if let Err(e) = verify(&part, sum) {
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    fs::rename(&part, done).at(done)
}

fn progress_bar(show: bool, total: Option<u64>, path: &Path) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::new_spinner(),
    };
    if !show {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar.set_message(
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    bar
}

/// A relative path with only normal components, or why it is refused.
fn safe_relative(p: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` would leave the target folder"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("empty path");
    }
    Ok(out)
}

/// Unpacks a `.tar.gz` into `dest`, refusing links, special files and escaping paths.
pub fn extract_tar_gz(archive: &Path, dest: &Path) -> Result<()> {
    let file = File::open(archive).at(archive)?;
    let corrupt =
        |e: std::io::Error| format_err(archive, format!("corrupt or truncated archive: {e}"));
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let unsafe_entry = |why| DataError::UnsafeEntry {
            archive: archive.to_path_buf(),
            entry: raw.display().to_string(),
            why,
        };
        let ty = entry.header().entry_type();
        if ty.is_pax_global_extensions() || ty.is_pax_local_extensions() || ty.is_gnu_longname() {
            continue;
        }
        let rel = safe_relative(&raw).map_err(unsafe_entry)?;
        let target = dest.join(&rel);
        if ty.is_dir() {
            fs::create_dir_all(&target).at(&target)?;
        } else if ty.is_file() || ty.is_contiguous() {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).at(parent)?;
            }
            let mut out = File::create(&target).at(&target)?;
            std::io::copy(&mut entry, &mut out).map_err(corrupt)?;
        } else if ty.is_symlink() || ty.is_hard_link() {
            return Err(unsafe_entry("links are not allowed"));
        } else {
            return Err(unsafe_entry("special files are not allowed"));
        }
    }
    Ok(())
}

/// Unpacks a `.zip` into `dest`, refusing links and escaping paths.
pub fn extract_zip(archive: &Path, dest: &Path) -> Result<()> {
    let file = File::open(archive).at(archive)?;
    let corrupt = |e: zip::result::ZipError| {
        format_err(archive, format!("corrupt or truncated zip archive: {e}"))
    };
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(corrupt)?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(corrupt)?;
        let raw = entry.name().to_string();
        let unsafe_entry = |why| DataError::UnsafeEntry {
            archive: archive.to_path_buf(),
            entry: raw.clone(),
            why,
        };
        if entry.is_symlink() {
            return Err(unsafe_entry("links are not allowed"));
        }
        let rel = safe_relative(Path::new(&raw)).map_err(unsafe_entry)?;
        let target = dest.join(&rel);
        if entry.is_dir() {
            fs::create_dir_all(&target).at(&target)?;
        } else {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).at(parent)?;
            }
            let mut out = File::create(&target).at(&target)?;
            std::io::copy(&mut entry, &mut out)
                .map_err(|e| format_err(archive, format!("corrupt entry `{raw}`: {e}")))?;
        }
    }
    Ok(())
}
