"""Data loading: file sources (`sources`) and text-classification data (`text`)."""
