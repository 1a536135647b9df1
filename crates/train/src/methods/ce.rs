//! `ce` — cross-entropy, the baseline (`METHODS.md`, "ce"): one plain network,
//! shuffled batches; the loss is [`kd_losses::methods::ce`].

super::plain_method!(
    /// Cross-entropy, the baseline.
    Ce,
    crate::method::About::new("ce", crate::method::Protocol::SelfDistillation),
    ce
);
