//! The `auth` capability: typed calls into an auth plugin.

use super::bindings::auth::AuthPlugin as AuthWorld;
pub use super::bindings::auth::exports::poplar::plugin::auth::{
    Decision, ExpirePolicy, Grant, Login, Pop3Policy, Secret, SecretKind, SecretLookup, UserLookup,
};
pub use super::bindings::auth::poplar::plugin::types::Peer;
use super::pool::{Plugin, PluginError};

/// A loaded auth plugin.
pub type AuthPlugin = Plugin<AuthWorld>;

impl Plugin<AuthWorld> {
    /// Asks the plugin to decide one login attempt.
    pub async fn verify(&self, login: &Login) -> Result<Decision, PluginError> {
        let mut lent = self.lend("verify").await?;
        let r = lent
            .world
            .poplar_plugin_auth()
            .call_verify(&mut lent.store, login)
            .await;
        self.settle(lent, r)
    }

    /// Resolves a delivery recipient's local part to a principal.
    pub async fn resolve_user(&self, user: &str) -> Result<UserLookup, PluginError> {
        let mut lent = self.lend("resolve-user").await?;
        let r = lent
            .world
            .poplar_plugin_auth()
            .call_resolve_user(&mut lent.store, user)
            .await;
        self.settle(lent, r)
    }

    /// Asks the plugin for a stored secret (APOP, SCRAM).
    pub async fn lookup_secret(
        &self,
        user: &str,
        kind: SecretKind,
        peer: &Peer,
    ) -> Result<SecretLookup, PluginError> {
        let mut lent = self.lend("lookup-secret").await?;
        let r = lent
            .world
            .poplar_plugin_auth()
            .call_lookup_secret(&mut lent.store, user, kind, peer)
            .await;
        self.settle(lent, r)
    }
}
