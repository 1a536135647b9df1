//! `sad` — Self Attention Distillation, classification form (`METHODS.md`, "sad"): one plain network,
//! shuffled batches; the loss is [`kd_losses::methods::sad`].

super::plain_method!(
    /// Self Attention Distillation, classification form.
    Sad,
    crate::method::About::new("sad", crate::method::Protocol::SelfDistillation),
    sad
);
