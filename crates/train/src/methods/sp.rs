//! `sp` — Similarity-Preserving distillation (`METHODS.md`, "sp"): one plain network,
//! shuffled batches and a trained teacher
//! (`TrainConfig::teacher`) run on the same images; the loss is [`kd_losses::methods::sp`].

super::plain_method!(
    /// Similarity-Preserving distillation.
    Sp,
    crate::method::About::new("sp", crate::method::Protocol::Teacher).teacher(),
    sp
);
