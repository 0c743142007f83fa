//! The `blob` host capability: one object-store bucket and prefix for
//! plugins granted one (`[<plugin>.blob]`). Without a grant every call
//! answers `not-granted`.

use wasmtime::component::Resource;

use super::bindings::storage::poplar::plugin::blob::{BlobError, Host, ObjectMeta};
use super::message::HostMessage;
use super::state::PluginState;

impl Host for PluginState {
    async fn get(&mut self, _key: String, _offset: u64, _len: u32) -> Result<Vec<u8>, BlobError> {
        Err(BlobError::NotGranted)
    }

    async fn head(&mut self, _key: String) -> Result<ObjectMeta, BlobError> {
        Err(BlobError::NotGranted)
    }

    async fn put(&mut self, _key: String, _data: Vec<u8>) -> Result<(), BlobError> {
        Err(BlobError::NotGranted)
    }

    async fn put_message(
        &mut self,
        _key: String,
        _msg: Resource<HostMessage>,
    ) -> Result<u64, BlobError> {
        Err(BlobError::NotGranted)
    }

    async fn delete(&mut self, _key: String) -> Result<(), BlobError> {
        Err(BlobError::NotGranted)
    }

    async fn list_objects(
        &mut self,
        _prefix: String,
        _after: Option<String>,
        _limit: u32,
    ) -> Result<Vec<ObjectMeta>, BlobError> {
        Err(BlobError::NotGranted)
    }
}
