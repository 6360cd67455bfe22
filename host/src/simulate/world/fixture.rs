//! The world fixture's TOML form.
use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    now: Spanned<String>,
    #[serde(default)]
    copy_rate: Option<Spanned<Size>>,
    #[serde(default)]
    free: Option<Spanned<Size>>,
    #[serde(default)]
    dir: Vec<RawDir>,
    #[serde(default)]
    service: Vec<RawService>,
    #[serde(default)]
    command: Vec<RawCommand>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDir {
    path: Spanned<String>,
    #[serde(default)]
    free: Option<Spanned<Size>>,
    #[serde(default)]
    files: BTreeMap<Spanned<String>, Spanned<RawFile>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawFile {
    Size(Size),
    Full(RawFileFull),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFileFull {
    #[serde(default)]
    size: Option<Size>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    hex: Option<String>,
    #[serde(default)]
    mtime: Option<String>,
    #[serde(default)]
    readonly: bool,
    #[serde(default)]
    damaged: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    server: Option<String>,
    name: Spanned<String>,
    state: Spanned<String>,
    #[serde(default)]
    fails_to: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    #[serde(default)]
    job: Option<String>,
    command: Spanned<String>,
    #[serde(default)]
    args_prefix: Vec<String>,
    #[serde(default)]
    exit_code: i32,
    #[serde(default)]
    output: String,
    #[serde(default)]
    duration: Option<Spanned<String>>,
    #[serde(default)]
    effects: Vec<Spanned<RawEffect>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
enum RawEffect {
    #[serde(alias = "create_file")]
    CreateFile(String),
    Remove(String),
    Service {
        service: String,
        state: String,
    },
}

struct Src<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Src<'_> {
    fn err(&self, span: Option<Range<usize>>, field: &str, msg: impl Into<String>) -> WorldError {
        WorldError {
            file: self.file.to_path_buf(),
            position: span.map(|s| crate::policy::position(self.text, s.start)),
            field: Some(field.to_string()).filter(|f| !f.is_empty()),
            message: msg.into(),
        }
    }
}

fn size(s: &Size) -> Result<u64, String> {
    match s {
        Size::Bytes(b) => Ok(*b),
        Size::Text(t) => t
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| format!("`{t}` is not a size: write bytes or e.g. \"4 KiB\", \"40 GiB\"")),
    }
}

/// Bytes written as hexadecimal digits (whitespace between them is ignored).
fn hex_bytes(h: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = h.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "`hex` has {} digits; give two per byte",
            digits.len()
        ));
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "`hex` holds `{}`, which is not a hexadecimal byte",
                        String::from_utf8_lossy(pair)
                    )
                })
        })
        .collect()
}

fn time_ms(t: &str) -> Result<i64, String> {
    humantime::parse_rfc3339(t)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| format!("`{t}` is not a UTC time: write e.g. \"2026-11-21T02:10:00Z\""))
}

fn state(s: &str) -> Result<ServiceState, String> {
    match s {
        "running" => Ok(ServiceState::Running),
        "stopped" => Ok(ServiceState::Stopped),
        o => Err(format!(
            "`{o}` is not a service state: write \"running\" or \"stopped\""
        )),
    }
}

pub(super) fn parse(file: &Path, text: &str) -> Result<World, WorldError> {
    let src = Src { file, text };
    let raw: Raw =
        toml::from_str(text).map_err(|e| src.err(e.span(), "", e.message().to_string()))?;
    // Absolute once: the fixture's paths name the same directories however it was given.
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    let base = std::path::absolute(dir.unwrap_or(Path::new(".")))
        .map_err(|e| src.err(None, "", format!("cannot make its directory absolute: {e}")))?;
    let base = base.as_path();
    let now = time_ms(raw.now.get_ref()).map_err(|m| src.err(Some(raw.now.span()), "now", m))?;
    let at = |s: &Spanned<Size>, field: &str| {
        size(s.get_ref()).map_err(|m| src.err(Some(s.span()), field, m))
    };
    let free = raw
        .free
        .as_ref()
        .map(|f| at(f, "free"))
        .transpose()?
        .unwrap_or(1 << 40);
    let mut w = World::new(file.display().to_string(), now, free);
    if let Some(r) = &raw.copy_rate {
        w.copy_rate = at(r, "copy_rate")?.max(1);
    }
    for (i, d) in raw.dir.iter().enumerate() {
        let field = format!("dir[{i}]");
        let dir = normalize(base, Path::new(d.path.get_ref()));
        if let Some(f) = &d.free {
            w.set_volume(&dir, at(f, &format!("{field}.free"))?);
        }
        w.mkdir_p(&dir)
            .map_err(|m| src.err(Some(d.path.span()), &format!("{field}.path"), m))?;
    }
    for (i, d) in raw.dir.iter().enumerate() {
        let dir = normalize(base, Path::new(d.path.get_ref()));
        for (name, f) in &d.files {
            let field = format!("dir[{i}].files.\"{}\"", name.get_ref());
            let rel = name.get_ref().trim_start_matches("./");
            let is_dir = rel.ends_with('/');
            let rel = rel.trim_end_matches('/');
            check_relative(rel)
                .map_err(|why| src.err(Some(name.span()), &field, format!("the path {why}")))?;
            if rel.is_empty() {
                return Err(src.err(Some(name.span()), &field, "name a file below the directory"));
            }
            let p = join(&dir, rel);
            let e = |m: String| src.err(Some(f.span()), &field, m);
            if is_dir {
                w.mkdir_p(&p).map_err(e)?;
                continue;
            }
            let full = match f.get_ref() {
                RawFile::Size(s) => RawFileFull {
                    size: Some(s.clone()),
                    ..Default::default()
                },
                RawFile::Full(full) => RawFileFull {
                    size: full.size.clone(),
                    text: full.text.clone(),
                    hex: full.hex.clone(),
                    mtime: full.mtime.clone(),
                    readonly: full.readonly,
                    damaged: full.damaged,
                },
            };
            let text_bytes: Option<Arc<[u8]>> = match (full.text, full.hex) {
                (Some(_), Some(_)) => return Err(e("give `text` or `hex`, not both".into())),
                (Some(t), None) => Some(Arc::from(t.into_bytes())),
                (None, Some(h)) => Some(Arc::from(hex_bytes(&h).map_err(e)?)),
                (None, None) => None,
            };
            let size = match (&full.size, &text_bytes) {
                (Some(_), Some(_)) => {
                    return Err(e("give `size` or `text`/`hex`, not both".into()));
                }
                (Some(s), None) => size(s).map_err(e)?,
                (None, Some(t)) => t.len() as u64,
                (None, None) => 0,
            };
            let mtime_ms = full
                .mtime
                .as_deref()
                .map(time_ms)
                .transpose()
                .map_err(e)?
                .unwrap_or(now);
            let content = w.new_content();
            // The fixture describes what is there: its files do not use up the free space
            // it states.
            w.insert_file(
                &p,
                FileNode {
                    size,
                    content,
                    mtime_ms,
                    readonly: full.readonly,
                    damaged: full.damaged,
                    text: text_bytes,
                },
            )
            .map_err(e)?;
        }
    }
    for (i, s) in raw.service.iter().enumerate() {
        let field = format!("service[{i}]");
        let st = state(s.state.get_ref())
            .map_err(|m| src.err(Some(s.state.span()), &format!("{field}.state"), m))?;
        let (mut fails_to_start, mut fails_to_stop) = (false, false);
        if let Some(f) = &s.fails_to {
            match f.get_ref().as_str() {
                "start" => fails_to_start = true,
                "stop" => fails_to_stop = true,
                o => {
                    return Err(src.err(
                        Some(f.span()),
                        &format!("{field}.fails_to"),
                        format!("`{o}`: write \"start\" or \"stop\""),
                    ));
                }
            }
        }
        w.set_service(
            s.server.as_deref().unwrap_or(HOST),
            s.name.get_ref(),
            ServiceModel {
                state: st,
                fails_to_start,
                fails_to_stop,
            },
        );
    }
    for (i, c) in raw.command.iter().enumerate() {
        let field = format!("command[{i}]");
        let duration_ms = match &c.duration {
            None => 1000,
            Some(d) => humantime::parse_duration(d.get_ref())
                .map(|d| d.as_millis() as u64)
                .map_err(|_| {
                    src.err(
                        Some(d.span()),
                        &format!("{field}.duration"),
                        format!(
                            "`{}` is not a duration: write e.g. \"3s\", \"20m\"",
                            d.get_ref()
                        ),
                    )
                })?,
        };
        let mut effects = Vec::new();
        for (j, e) in c.effects.iter().enumerate() {
            let ef = format!("{field}.effects[{j}]");
            let err = |m: String| src.err(Some(e.span()), &ef, m);
            effects.push(match e.get_ref() {
                RawEffect::CreateFile(l) => SimEffect::CreateFile(parse_location(l).map_err(err)?),
                RawEffect::Remove(l) => SimEffect::Remove(parse_location(l).map_err(err)?),
                RawEffect::Service { service, state: s } => SimEffect::Service {
                    service: service.clone(),
                    state: state(s).map_err(err)?,
                },
            });
        }
        if c.command.get_ref().is_empty() {
            return Err(src.err(
                Some(c.command.span()),
                &format!("{field}.command"),
                "name the job's logical command",
            ));
        }
        w.commands.push(CommandOverride {
            job: c.job.clone(),
            behaviour: CommandBehaviour {
                command: c.command.get_ref().clone(),
                args_prefix: c.args_prefix.clone(),
                exit_code: c.exit_code,
                output: c.output.clone(),
                duration_ms,
                effects,
            },
        });
    }
    Ok(w)
}
