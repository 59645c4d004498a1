//! Reads the accounts the workers run as: `--user` and `--group`, and a dedicated pool's `user` and `group`, by
//! name or by number.

use anyhow::bail;
use nix::unistd::{Gid, Group, Uid, User};

/// `--user` (or an app's `user`): a user name or a numeric id.
pub(super) fn parse_user(text: &str) -> anyhow::Result<Uid> {
    if let Ok(id) = text.parse::<u32>() {
        return Ok(Uid::from_raw(id));
    }
    match User::from_name(text) {
        Ok(Some(user)) => Ok(user.uid),
        _ => bail!("--user: no such user {text:?}"),
    }
}

/// `--group` (or an app's `group`): a group name or a numeric id.
pub(super) fn parse_group(text: &str) -> anyhow::Result<Gid> {
    if let Ok(id) = text.parse::<u32>() {
        return Ok(Gid::from_raw(id));
    }
    match Group::from_name(text) {
        Ok(Some(group)) => Ok(group.gid),
        _ => bail!("--group: no such group {text:?}"),
    }
}
