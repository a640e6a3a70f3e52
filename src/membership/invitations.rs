//! Ambassador invitations: a member invites people of a partner co-op (who have no account)
//! into one room for a limited time.
//!
//! The member gets a link carrying a random 256-bit token in its fragment (`/invite#…`, so
//! it never reaches a server log); only the token's hash is stored. A guest who opens it
//! types a display name and redeems the token for a guest grant (never host powers), shown
//! to others as "guest of @member". An invitation stops working when it expires, is used up
//! or revoked, when its room is locked or members-only, when its member is no longer a
//! member, or when the member's guest-minute budget for the month is spent. Where only hosts
//! may open rooms, it works only once a host has opened its room.

use serde::{Deserialize, Serialize};

use super::store::{self, Invitation, RoomMode, Session};
use super::{IssuedGrant, Membership, MembershipError, OFFLINE_GRACE_SECS};
use crate::config::OpenRooms;
use crate::grant::{unix_now, Claims, Permissions};
use crate::secret::random_b64;
use plenary_proto::{Role, TrackSource};

/// Most redemptions one invitation may allow.
pub const MAX_USES: i64 = 1000;
/// Lifetime of a guest grant, in seconds.
const GUEST_GRANT_SECS: u64 = 120;

/// What a member asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewInvitation {
    /// The room.
    pub room: String,
    /// The partner's name, shown to the member and hosts.
    pub label: String,
    /// Hours it stays valid (at most `invitation_max_days` × 24).
    pub valid_hours: u64,
    /// Most redemptions.
    pub max_uses: i64,
    /// Guests may use their microphone.
    #[serde(default)]
    pub can_speak: bool,
    /// Guests may use their camera.
    #[serde(default)]
    pub can_video: bool,
}

/// A created invitation, with the link to share (shown once: only its hash is kept).
#[derive(Debug, Clone, Serialize)]
pub struct CreatedInvitation {
    /// The invitation.
    pub invitation: Invitation,
    /// The link to share.
    pub link: String,
}

/// What a guest sees before redeeming.
#[derive(Debug, Clone, Serialize)]
pub struct InvitationPreview {
    /// The room.
    pub room: String,
    /// The partner's name.
    pub label: String,
    /// Who invites.
    pub inviter: String,
    /// Unix seconds.
    pub valid_until: i64,
    /// Guests may speak.
    pub can_speak: bool,
    /// Guests may show video.
    pub can_video: bool,
}

/// `YYYY-MM` of a Unix time: the month guest time is counted in.
pub fn month(now: i64) -> String {
    // Days since the epoch → civil date (Howard Hinnant's algorithm), to name the month.
    let days = now.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}")
}

impl Membership {
    /// A member creates an invitation.
    pub async fn create_invitation(
        &self,
        s: &Session,
        req: NewInvitation,
    ) -> Result<CreatedInvitation, MembershipError> {
        let bad = |m: &str| Err(MembershipError::BadRequest(m.into()));
        if !plenary_proto::valid_room_name(&req.room) {
            return bad("room must be 1 to 64 letters, digits, '-', '_' or '.'");
        }
        let label = req.label.trim().to_string();
        if label.is_empty() || label.chars().count() > 100 {
            return bad("label (the partner's name) must be 1 to 100 characters");
        }
        let max_hours = self.config.invitation_max_days * 24;
        if req.valid_hours == 0 || req.valid_hours > max_hours {
            return Err(MembershipError::BadRequest(format!(
                "valid_hours must be 1 to {max_hours}"
            )));
        }
        if !(1..=MAX_USES).contains(&req.max_uses) {
            return Err(MembershipError::BadRequest(format!(
                "max_uses must be 1 to {MAX_USES}"
            )));
        }
        // Only members invite: a member who lost membership since the last check may not.
        let s = &self.recheck(s).await?;
        let now = unix_now() as i64;
        let token = random_b64(32);
        let inv = Invitation {
            id: format!("inv_{}", &random_b64(9)),
            room: req.room.clone(),
            label,
            inviter_instance: s.instance.clone(),
            inviter_account: s.account_id.clone(),
            inviter_handle: s.handle.clone(),
            valid_until: now + req.valid_hours as i64 * 3600,
            max_uses: req.max_uses,
            uses: 0,
            can_speak: req.can_speak,
            can_video: req.can_video,
            revoked: false,
            created_at: now,
        };
        let limit = self.config.max_active_invitations_per_member;
        let (inv2, tok) = (inv.clone(), token.clone());
        let outcome = self
            .store
            .run(move |c| {
                let tx = c.transaction()?;
                if store::room_mode(&tx, &inv2.room)? == Some(RoomMode::MembersOnly) {
                    return Ok(Err(
                        "this room is for members only: a host must open it to guests first",
                    ));
                }
                let active = store::count_active_invitations(
                    &tx,
                    &inv2.inviter_instance,
                    &inv2.inviter_account,
                    now,
                )?;
                if active >= limit {
                    return Ok(Err(
                        "you have reached your limit of active invitations; revoke one first",
                    ));
                }
                store::create_invitation(&tx, &tok, &inv2)?;
                store::audit(
                    &tx,
                    now,
                    "invitation_created",
                    &inv2.inviter_handle,
                    &inv2.room,
                    serde_json::json!({
                        "invitation": inv2.id,
                        "label": inv2.label,
                        "valid_until": inv2.valid_until,
                        "max_uses": inv2.max_uses,
                        "can_speak": inv2.can_speak,
                        "can_video": inv2.can_video,
                    }),
                )?;
                tx.commit()?;
                Ok(Ok(()))
            })
            .await?;
        if let Err(m) = outcome {
            return Err(MembershipError::Forbidden(m.into()));
        }
        Ok(CreatedInvitation {
            link: self.public_link(&format!("/invite#{token}")),
            invitation: inv,
        })
    }

    /// The member's own invitations, or every invitation for a host asking for all.
    pub async fn list_invitations(
        &self,
        s: &Session,
        all: bool,
    ) -> Result<Vec<Invitation>, MembershipError> {
        if all && !s.is_host {
            return Err(MembershipError::Forbidden(
                "only hosts may list everyone's invitations".into(),
            ));
        }
        let (i, a) = (s.instance.clone(), s.account_id.clone());
        Ok(self
            .store
            .run(move |c| {
                if all {
                    store::list_invitations(c, None)
                } else {
                    store::list_invitations(c, Some((&i, &a)))
                }
            })
            .await?)
    }

    /// The inviting member or any host revokes an invitation.
    pub async fn revoke_invitation(&self, s: &Session, id: &str) -> Result<(), MembershipError> {
        let (id, session) = (id.to_string(), s.clone());
        let outcome = self
            .store
            .run(move |c| {
                let tx = c.transaction()?;
                let Some(inv) = store::invitation_by_id(&tx, &id)? else {
                    return Ok(Err(MembershipError::NotFound("no such invitation".into())));
                };
                let mine = inv.inviter_instance == session.instance
                    && inv.inviter_account == session.account_id;
                if !mine && !session.is_host {
                    return Ok(Err(MembershipError::Forbidden(
                        "only the member who created it, or a host, may revoke an invitation"
                            .into(),
                    )));
                }
                store::revoke_invitation(&tx, &id)?;
                store::audit(
                    &tx,
                    unix_now() as i64,
                    "invitation_revoked",
                    &session.handle,
                    &inv.room,
                    serde_json::json!({ "invitation": id }),
                )?;
                tx.commit()?;
                Ok(Ok(()))
            })
            .await?;
        outcome
    }

    /// What an invitation token opens, if it still works (for the guest's page).
    pub async fn preview_invitation(
        &self,
        token: &str,
    ) -> Result<InvitationPreview, MembershipError> {
        let inv = self.usable_invitation(token).await?;
        Ok(InvitationPreview {
            room: inv.room,
            label: inv.label,
            inviter: inv.inviter_handle,
            valid_until: inv.valid_until,
            can_speak: inv.can_speak,
            can_video: inv.can_video,
        })
    }

    /// Checks everything that makes an invitation stop working.
    async fn usable_invitation(&self, token: &str) -> Result<Invitation, MembershipError> {
        let tok = token.to_string();
        let now = unix_now() as i64;
        let found = self
            .store
            .run(move |c| {
                let Some(inv) = store::invitation_by_token(c, &tok)? else {
                    return Ok(None);
                };
                let mode = store::room_mode(c, &inv.room)?;
                let status = store::member_status(c, &inv.inviter_instance, &inv.inviter_account)?;
                let used = store::guest_seconds(c, &inv.inviter_handle, &month(now))?;
                Ok(Some((inv, mode, status, used)))
            })
            .await?;
        let Some((inv, mode, status, used_secs)) = found else {
            return Err(MembershipError::NotFound(
                "this invitation link is not valid".into(),
            ));
        };
        let gone = |m: &str| Err(MembershipError::Forbidden(m.into()));
        if inv.revoked {
            return gone("this invitation was revoked");
        }
        if inv.valid_until <= now {
            return gone("this invitation has expired");
        }
        if inv.uses >= inv.max_uses {
            return gone("this invitation has been used as many times as it allows");
        }
        match mode {
            Some(RoomMode::Locked) => return gone("a host has locked this room"),
            Some(RoomMode::MembersOnly) => return gone("this room is now for members only"),
            // A guest's join would open the room in the media plane: not where only hosts may.
            None if self.config.who_may_open_rooms == OpenRooms::Hosts => return gone(
                "this meeting has not been opened by a host yet; please try again when it starts",
            ),
            _ => {}
        }
        if super::contains_handle(&self.config.deny, &inv.inviter_handle) {
            return gone("the member who invited you is no longer a member");
        }
        match status {
            Some((false, _)) => return gone("the member who invited you is no longer a member"),
            Some((true, checked)) if now - checked < self.config.recheck_secs as i64 => {}
            _ => self.recheck_inviter(&inv, status.map(|s| s.1)).await?,
        }
        let budget = self.config.guest_minutes_per_month as i64 * 60;
        if budget > 0 && used_secs >= budget {
            return gone("the member who invited you has used this month's guest time");
        }
        Ok(inv)
    }

    /// Asks the instance (with an app token) whether the inviter's account still exists and
    /// is not suspended.
    async fn recheck_inviter(
        &self,
        inv: &Invitation,
        last_checked: Option<i64>,
    ) -> Result<(), MembershipError> {
        let now = unix_now() as i64;
        let within_grace = last_checked.is_some_and(|t| now - t < OFFLINE_GRACE_SECS);
        let inst = self.instance(&inv.inviter_instance)?.clone();
        let disc = self.discovery(&inst).await;
        let result = match self.app(&inst, &disc).await {
            Ok(app) => match self.client.app_token(&disc, &app).await {
                Ok(token) => {
                    let r = self
                        .client
                        .account(&inst.base, &token, &inv.inviter_account)
                        .await
                        .map(|a| !a.suspended);
                    // One look-up per token: revoke it so app tokens do not pile up.
                    let (client, disc, app) = (self.client.clone(), disc.clone(), app.clone());
                    tokio::spawn(async move {
                        let _ = client.revoke(&disc, &app, &token).await;
                    });
                    r
                }
                Err(e) => Err(e),
            },
            Err(MembershipError::Instance(e)) => Err(e),
            Err(e) => return Err(e),
        };
        let active = match result {
            Ok(active) => active,
            Err(super::mastodon::ApiError::Status(404 | 410)) => false,
            Err(e) if within_grace => {
                tracing::warn!("inviter re-check failed ({e}); using the last check");
                return Ok(());
            }
            Err(e) => return Err(MembershipError::Instance(e)),
        };
        let (i, a, h) = (
            inv.inviter_instance.clone(),
            inv.inviter_account.clone(),
            inv.inviter_handle.clone(),
        );
        self.store
            .run(move |c| store::set_member(c, &i, &a, &h, active, now))
            .await?;
        if active {
            Ok(())
        } else {
            Err(MembershipError::Forbidden(
                "the member who invited you is no longer a member".into(),
            ))
        }
    }

    /// A guest redeems an invitation for a guest grant.
    pub async fn redeem_invitation(
        &self,
        token: &str,
        name: &str,
    ) -> Result<IssuedGrant, MembershipError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return Err(MembershipError::BadRequest(
                "your name must be 1 to 64 characters".into(),
            ));
        }
        let inv = self.usable_invitation(token).await?;
        let id = inv.id.clone();
        let actor = format!("guest:{name}");
        let (a, r, inviter) = (actor.clone(), inv.room.clone(), inv.inviter_handle.clone());
        let counted = self
            .store
            .run(move |c| {
                let tx = c.transaction()?;
                if !store::use_invitation(&tx, &id)? {
                    return Ok(false);
                }
                store::audit(
                    &tx,
                    unix_now() as i64,
                    "invitation_redeemed",
                    &a,
                    &r,
                    serde_json::json!({ "invitation": id, "invited_by": inviter }),
                )?;
                tx.commit()?;
                Ok(true)
            })
            .await?;
        if !counted {
            return Err(MembershipError::Forbidden(
                "this invitation has been used as many times as it allows".into(),
            ));
        }
        let mut sources = Vec::new();
        if inv.can_speak {
            sources.push(TrackSource::Microphone);
        }
        if inv.can_video {
            sources.push(TrackSource::Camera);
        }
        let permissions = Permissions {
            can_publish: !sources.is_empty(),
            can_publish_sources: sources,
            can_subscribe: true,
            can_publish_data: true,
            is_host: false,
        };
        let identity = format!("guest:{}", random_b64(12));
        let mut claims = Claims::new(
            &inv.room,
            &identity,
            name,
            Role::Guest,
            std::time::Duration::from_secs(GUEST_GRANT_SECS),
        )
        .with_permissions(permissions);
        claims.invited_by = Some(inv.inviter_handle.clone());
        self.issue(claims, &actor).await
    }

    /// Adds a guest's time in a meeting to their inviter's monthly budget.
    pub async fn record_guest_time(&self, inviter: &str, seconds: u64) {
        let (h, m) = (inviter.to_string(), month(unix_now() as i64));
        let secs = seconds as i64;
        if let Err(e) = self
            .store
            .run(move |c| store::add_guest_seconds(c, &h, &m, secs))
            .await
        {
            tracing::warn!("could not record guest time: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::month;

    #[test]
    fn months_from_unix_time() {
        assert_eq!(month(0), "1970-01");
        assert_eq!(month(1_764_000_000), "2025-11"); // 2025-11-24
        assert_eq!(month(951_782_400), "2000-02"); // 2000-02-29
        assert_eq!(month(951_868_800), "2000-03");
    }
}
