//! `kd` — Hinton's knowledge distillation (`METHODS.md`, "kd"): one plain network,
//! shuffled batches and a trained teacher
//! (`TrainConfig::teacher`) run on the same images; the loss is [`kd_losses::methods::kd`].

super::plain_method!(
    /// Hinton's knowledge distillation.
    Kd,
    crate::method::About::new("kd", crate::method::Protocol::Teacher).teacher(),
    kd
);
