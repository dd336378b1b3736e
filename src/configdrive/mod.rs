//! (module root; filled in by its issue)
