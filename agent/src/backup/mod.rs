//! Backups of a stack's data on the host. The archive library: [`archive`] writes stored
//! archives (tar of volumes or a dump's bytes, zstd, age when recipients are given), [`extract`]
//! reads them back safely, [`crypt`] is the age side, [`manifest`] what a backup holds.
//!
//! Running backups: [`service`] starts the tasks around a shared [`ctx`] — the [`schedule`]r,
//! the [`orders`] taker and the [`upload`]er; [`make`] makes one backup (hooks through [`exec`],
//! bridged by [`pipe`]), [`restore`] restores or verifies one, [`spool`] is what waits on disk.

pub mod archive;
pub mod crypt;
pub mod ctx;
pub mod exec;
pub mod extract;
pub mod make;
pub mod manifest;
pub mod orders;
pub mod pipe;
pub mod restore;
pub mod schedule;
pub mod service;
pub mod spool;
pub mod upload;
