//! The trained teacher of a teacher → student method (kd, at, sp).

use super::checkpoint;
use super::folder::RunLog;
use crate::config::TrainConfig;
use crate::device::TrainDevice;
use crate::entry::Entry;
use crate::method::Info;
use anyhow::{anyhow, bail, Context, Result};
use dfdx::nn::LoadFromSafetensors;
use kd_models::{build_network, NetConfig, Network};

/// Teacher → student methods need `teacher` (checked before any data is loaded).
pub(crate) fn check_given(cfg: &TrainConfig, info: &Info) -> Result<()> {
    if info.teacher && cfg.teacher.is_none() {
        bail!(
            "method `{}` distils from a trained teacher: pass --teacher RUN_DIR (or `teacher: \
             \"RUN_DIR\"` in the config), a run folder of this project trained on {} (e.g. from \
             `cargo xtask train ce --dataset {} --arch resnet56`)",
            cfg.method,
            cfg.dataset,
            cfg.dataset
        );
    }
    Ok(())
}

/// The teacher network of the run in `cfg.teacher`: its architecture, with its best
/// checkpoint (its last when it has no best). It must be a run of one plain network (its only
/// reported entry `net`). Built after the student, so the student starts from the same weights
/// as a CE run with the same seed.
pub(crate) fn load<D: TrainDevice>(
    cfg: &TrainConfig,
    dev: &D,
    classes: usize,
    channels: usize,
    log: &mut RunLog,
) -> Result<Option<Network<D>>> {
    let Some(dir) = &cfg.teacher else {
        return Ok(None);
    };
    let what = || format!("teacher {}", dir.display());
    let tcfg = TrainConfig::load(&dir.join("config.ron"))
        .and_then(TrainConfig::resolve)
        .with_context(what)?;
    if tcfg.dataset != cfg.dataset {
        bail!(
            "{}: trained on {}, this run is on {}",
            what(),
            tcfg.dataset,
            cfg.dataset
        );
    }
    let name = ["best", "last"]
        .into_iter()
        .find(|c| dir.join("checkpoints").join(c).join("state.json").is_file())
        .ok_or_else(|| anyhow!("{}: no checkpoints/best or checkpoints/last", what()))?;
    let (state, ckpt) = checkpoint::load(dir, name).with_context(what)?;
    if state.students != [Entry::Net] {
        bail!(
            "{}: a `{}` run does not train one plain network; a teacher is a run whose only \
             reported entry is `net` (ce, say)",
            what(),
            tcfg.method
        );
    }
    let mut net = build_network(dev, tcfg.arch_name(), NetConfig::new(classes, channels))
        .map_err(|e| anyhow!("{}: {e}", what()))?;
    let file = ckpt.join("model.safetensors");
    net.load_safetensors(&file)
        .map_err(|e| checkpoint::damaged(dir, name, &file, e))?;
    log.info(&format!(
        "teacher: {} from {} (epoch {}, test accuracy {:.2}%)",
        tcfg.arch_name(),
        ckpt.display(),
        state.epochs_done,
        state.last_acc.first().copied().unwrap_or(f64::NAN)
    ));
    Ok(Some(net))
}
