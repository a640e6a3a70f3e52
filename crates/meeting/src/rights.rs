//! What a participant may do: the rights their grant gives ([`Rights`]) and, from those,
//! the room's listener mode, host powers and the floor, what they may do now
//! ([`effective`]).

use plenary_proto::{Permissions, TrackSource};

/// What a grant allows (checked by the server when it was presented).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    /// Sources the grant lets this participant publish.
    pub can_publish: Vec<TrackSource>,
    /// Receives the others' media.
    pub can_subscribe: bool,
    /// May send chat and data messages.
    pub can_chat: bool,
    /// Host powers by grant.
    pub is_host: bool,
}

impl Rights {
    /// Whether the grant lets this participant publish `source`.
    pub fn may_publish(&self, source: TrackSource) -> bool {
        self.can_publish.contains(&source)
    }
}

/// What a member may do now. In listener mode only hosts publish what their grant allows;
/// whoever has the floor may publish microphone and camera (and whatever else their grant
/// allows).
pub fn effective(
    rights: &Rights,
    is_host: bool,
    has_floor: bool,
    listener_mode: bool,
) -> Permissions {
    use TrackSource::*;
    let can_publish = [Microphone, Camera, Screen, ScreenAudio]
        .into_iter()
        .filter(|&source| {
            let by_grant = rights.may_publish(source) && (!listener_mode || is_host);
            let by_floor =
                has_floor && (matches!(source, Microphone | Camera) || rights.may_publish(source));
            by_grant || by_floor
        })
        .collect();
    Permissions {
        can_publish,
        can_subscribe: rights.can_subscribe,
        can_chat: rights.can_chat,
        is_host,
        has_floor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TrackSource::*;

    fn member() -> Rights {
        Rights {
            can_publish: vec![Microphone, Camera],
            can_subscribe: true,
            can_chat: true,
            is_host: false,
        }
    }

    #[test]
    fn listener_mode_takes_publishing_away_from_members_but_not_hosts() {
        assert_eq!(
            effective(&member(), false, false, false).can_publish,
            vec![Microphone, Camera]
        );
        assert!(effective(&member(), false, false, true)
            .can_publish
            .is_empty());
        assert_eq!(
            effective(&member(), true, false, true).can_publish,
            vec![Microphone, Camera]
        );
    }

    #[test]
    fn the_floor_gives_microphone_and_camera_even_to_a_listener_grant() {
        let listener = Rights {
            can_publish: vec![],
            ..member()
        };
        assert!(effective(&listener, false, false, false)
            .can_publish
            .is_empty());
        assert_eq!(
            effective(&listener, false, true, true).can_publish,
            vec![Microphone, Camera]
        );
        let sharer = Rights {
            can_publish: vec![Microphone, Screen],
            ..member()
        };
        assert_eq!(
            effective(&sharer, false, true, true).can_publish,
            vec![Microphone, Camera, Screen]
        );
    }
}
