//! The `filter` capability: typed calls into filter plugins, and training.

use super::bindings::filter::FilterPlugin as FilterWorld;
pub use super::bindings::filter::exports::poplar::plugin::filter::{Action, Envelope, Verdict};
use super::bindings::trainable::TrainableFilterPlugin as TrainableWorld;
/// The envelope as the trainer sees it (the same record as [`Envelope`],
/// generated for the trainable world).
pub use super::bindings::trainable::exports::poplar::plugin::filter::Envelope as TrainingEnvelope;
use super::bindings::trainable::exports::poplar::plugin::trainer::Example as WitExample;
pub use super::bindings::trainable::exports::poplar::plugin::trainer::TrainingReport;
use super::message::HostMessage;
use super::pool::{Plugin, PluginError};

/// A loaded filter plugin.
pub type FilterPlugin = Plugin<FilterWorld>;
/// A filter plugin loaded for training.
pub type TrainablePlugin = Plugin<TrainableWorld>;

impl Plugin<FilterWorld> {
    /// Classifies one message for one recipient. `Ok(Err(why))` is the
    /// filter saying it could not decide.
    pub async fn classify(
        &self,
        env: &Envelope,
        msg: &HostMessage,
    ) -> Result<Result<Verdict, String>, PluginError> {
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

/// One labelled message for [`Plugin::train`].
#[derive(Debug, Clone)]
pub struct Example {
    pub msg: HostMessage,
    /// `spam`, `ham`, or a category name.
    pub class: String,
    /// Whose model learns: a principal, or `None` for the global model.
    pub principal: Option<String>,
    pub envelope: Option<TrainingEnvelope>,
    /// Take the lesson back instead of learning it.
    pub unlearn: bool,
}

impl Plugin<TrainableWorld> {
    /// Hands a batch of labelled messages to the plugin's trainer.
    pub async fn train(
        &self,
        examples: &[Example],
    ) -> Result<Result<TrainingReport, String>, PluginError> {
        let mut lent = self.lend("train").await?;
        let mut items = Vec::with_capacity(examples.len());
        for e in examples {
            match lent.store.data_mut().table.push(e.msg.clone()) {
                Ok(msg) => items.push(WitExample {
                    msg,
                    class: e.class.clone(),
                    principal: e.principal.clone(),
                    envelope: e.envelope.clone(),
                    unlearn: e.unlearn,
                }),
                Err(err) => return self.settle(lent, Err(err.into())),
            }
        }
        let r = lent
            .world
            .poplar_plugin_trainer()
            .call_train(&mut lent.store, &items)
            .await;
        self.settle(lent, r)
    }
}
