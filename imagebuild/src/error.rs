//! The errors of a build, each saying which step failed.

/// Why a build failed. [`BuildError::Invalid`] and [`BuildError::Conflict`] are found before
/// anything is done; the others after a stage started (and everything it made is undone).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Bad input, found up front.
    #[error("{0}")]
    Invalid(String),
    /// The output already exists.
    #[error("{0}")]
    Conflict(String),
    /// The build was cancelled (Ctrl-C); everything it made was removed.
    #[error("image build cancelled; scratch files removed, nothing registered")]
    Cancelled,
    /// A stage failed.
    #[error("{stage}: {message}")]
    Stage {
        /// The stage.
        stage: crate::Stage,
        /// What went wrong, with the tool's last output lines.
        message: String,
    },
}

impl BuildError {
    /// A stage failure.
    pub(crate) fn stage(stage: crate::Stage, message: impl Into<String>) -> Self {
        Self::Stage {
            stage,
            message: message.into(),
        }
    }
}
