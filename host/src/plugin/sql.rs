//! The `sql` host capability: PostgreSQL statements for plugins granted a
//! database (`[<plugin>.sql]`). Without a grant every call answers
//! `not-granted`.

use wasmtime::component::Resource;

use super::bindings::auth::poplar::plugin::sql::{
    Host, HostTransaction, Isolation, Rows, SqlError, Value,
};
use super::state::PluginState;

/// An open transaction lent to a plugin for the rest of one call.
pub struct SqlTransaction {
    _private: (),
}

impl Host for PluginState {
    async fn query(&mut self, _statement: String, _params: Vec<Value>) -> Result<Rows, SqlError> {
        Err(SqlError::NotGranted)
    }

    async fn execute(&mut self, _statement: String, _params: Vec<Value>) -> Result<u64, SqlError> {
        Err(SqlError::NotGranted)
    }

    async fn batch(&mut self, _statements: String) -> Result<(), SqlError> {
        Err(SqlError::NotGranted)
    }

    async fn begin(&mut self, _level: Isolation) -> Result<Resource<SqlTransaction>, SqlError> {
        Err(SqlError::NotGranted)
    }
}

impl HostTransaction for PluginState {
    async fn query(
        &mut self,
        _tx: Resource<SqlTransaction>,
        _statement: String,
        _params: Vec<Value>,
    ) -> Result<Rows, SqlError> {
        Err(SqlError::NotGranted)
    }

    async fn execute(
        &mut self,
        _tx: Resource<SqlTransaction>,
        _statement: String,
        _params: Vec<Value>,
    ) -> Result<u64, SqlError> {
        Err(SqlError::NotGranted)
    }

    async fn commit(&mut self, tx: Resource<SqlTransaction>) -> Result<(), SqlError> {
        let _ = self.table.delete(tx);
        Err(SqlError::NotGranted)
    }

    async fn drop(&mut self, tx: Resource<SqlTransaction>) -> wasmtime::Result<()> {
        self.table.delete(tx)?;
        Ok(())
    }
}
