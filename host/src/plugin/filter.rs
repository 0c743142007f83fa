//! The `filter` capability: typed calls into filter plugins, and training.

use wasmtime::component::Resource;

use super::bindings::filter::FilterPlugin as FilterWorld;
pub use super::bindings::filter::exports::poplar::plugin::filter::{Action, Envelope, Verdict};
use super::bindings::trainable::TrainableFilterPlugin as TrainableWorld;
pub use super::bindings::trainable::exports::poplar::plugin::trainer::TrainingReport;
use super::message::HostMessage;
use super::pool::{Plugin, PluginError};

/// A loaded filter plugin.
pub type FilterPlugin = Plugin<FilterWorld>;
/// A filter plugin loaded for training.
pub type TrainablePlugin = Plugin<TrainableWorld>;

impl Plugin<FilterWorld> {
    /// Classifies one message for one recipient.
    pub async fn classify(
        &self,
        env: &Envelope,
        msg: &HostMessage,
    ) -> Result<Verdict, PluginError> {
        let mut lent = self.lend("classify").await?;
        let (owned, borrowed) = match lent.share(msg) {
            Ok(h) => h,
            Err(e) => return self.settle(lent, Err(e)),
        };
        let r = lent
            .world
            .poplar_plugin_filter()
            .call_classify(&mut lent.store, env, borrowed)
            .await;
        lent.unshare(owned);
        self.settle(lent, r)
    }
}

impl Plugin<TrainableWorld> {
    /// Hands a batch of labelled messages to the plugin's trainer.
    pub async fn train(
        &self,
        spam: &[HostMessage],
        ham: &[HostMessage],
    ) -> Result<Result<TrainingReport, String>, PluginError> {
        let mut lent = self.lend("train").await?;
        let mut own = |msgs: &[HostMessage]| -> wasmtime::Result<Vec<Resource<HostMessage>>> {
            msgs.iter()
                .map(|m| Ok(lent.store.data_mut().table.push(m.clone())?))
                .collect()
        };
        let handles = own(spam).and_then(|s| Ok((s, own(ham)?)));
        let (spam, ham) = match handles {
            Ok(h) => h,
            Err(e) => return self.settle(lent, Err(e)),
        };
        let r = lent
            .world
            .poplar_plugin_trainer()
            .call_train(&mut lent.store, &spam, &ham)
            .await;
        self.settle(lent, r)
    }
}
