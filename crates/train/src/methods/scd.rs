//! `scd` — Similarity and Consistency by Self-Distillation (`METHODS.md`, "scd"): one plain network,
//! shuffled batches; the loss is [`kd_losses::methods::scd`].

super::plain_method!(
    /// Similarity and Consistency by Self-Distillation.
    Scd,
    crate::method::About::new("scd", crate::method::Protocol::SelfDistillation),
    scd
);
