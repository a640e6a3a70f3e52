//! Room names: the one rule every part (the dev-grant API, member grants, invitations, the
//! minutes) checks a room name against.

/// Longest room name, in bytes.
pub const MAX_ROOM_NAME: usize = 64;

/// Whether `room` is a valid room name: 1 to 64 of ASCII letters, digits, `-`, `_`, `.`.
pub fn valid_room_name(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= MAX_ROOM_NAME
        && room
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_short_and_plain() {
        assert!(valid_room_name("gm-2025_11.a"));
        assert!(valid_room_name(&"a".repeat(64)));
        for bad in ["", "a b", "é", "a/b", "../x", &"a".repeat(65)] {
            assert!(!valid_room_name(bad), "{bad:?}");
        }
    }
}
