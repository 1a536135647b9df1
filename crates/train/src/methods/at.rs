//! `at` — Attention Transfer (`METHODS.md`, "at"): one plain network,
//! shuffled batches and a trained teacher
//! (`TrainConfig::teacher`) run on the same images; the loss is [`kd_losses::methods::at`].

super::plain_method!(
    /// Attention Transfer.
    At,
    crate::method::About::new("at", crate::method::Protocol::Teacher).teacher(),
    at
);
