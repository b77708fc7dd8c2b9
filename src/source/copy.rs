//! The native dump: one COPY per work unit, streamed through the [`Splitter`] into a sink.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::format::copyfmt::{CopyFormat, Piece, Splitter};
use crate::format::manifest::{quote_ident, Chunk, Table};
use crate::progress::Progress;
use crate::source::plan::WorkUnit;
use crate::source::sink::{spawn_sink, SinkConfig, BATCH_BYTES};

/// The `COPY ... TO STDOUT` statement of a unit. Explicit column lists leave generated columns
/// out; `ONLY` (implicit in `COPY table TO`) keeps inheritance children from being counted twice.
pub fn copy_out_sql(table: &Table, unit_from: Option<u32>, unit_to: Option<u32>) -> String {
    let cols = column_list(table);
    let fmt = table.copy_format.sql_option();
    // An extension's configuration table: the rows its condition selects, as pg_dump reads
    // them (such a table is never split).
    if let Some(filter) = table
        .extension_config
        .as_ref()
        .and_then(|c| c.filter.as_deref())
    {
        return format!(
            "COPY (SELECT {} FROM ONLY {} {filter}) TO STDOUT {fmt}",
            cols.unwrap_or_default(),
            table.qualified()
        );
    }
    if unit_from.is_none() && unit_to.is_none() {
        return match cols {
            Some(cols) => format!("COPY {} ({cols}) TO STDOUT {fmt}", table.qualified()),
            None => format!("COPY {} TO STDOUT {fmt}", table.qualified()),
        };
    }
    let mut conds = Vec::new();
    if let Some(from) = unit_from {
        conds.push(format!("ctid >= '({from},0)'::tid"));
    }
    if let Some(to) = unit_to {
        conds.push(format!("ctid < '({to},0)'::tid"));
    }
    format!(
        "COPY (SELECT {} FROM ONLY {} WHERE {}) TO STDOUT {fmt}",
        cols.unwrap_or_default(),
        table.qualified(),
        conds.join(" AND ")
    )
}

/// The `COPY ... FROM STDIN` statement for loading a chunk of `table`.
pub fn copy_in_sql(table: &Table) -> String {
    let fmt = table.copy_format.sql_option();
    match column_list(table) {
        Some(cols) => format!("COPY {} ({cols}) FROM STDIN {fmt}", table.qualified()),
        None => format!("COPY {} FROM STDIN {fmt}", table.qualified()),
    }
}

/// `None` for a table without columns (COPY takes no empty list).
fn column_list(table: &Table) -> Option<String> {
    if table.columns.is_empty() {
        return None;
    }
    Some(
        table
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// Dumps one unit of `table` on `client` (already inside the snapshot's transaction) into
/// chunk files. Returns the chunks, all fsynced and checksummed; on error, files of this
/// attempt are removed.
pub async fn dump_unit(
    client: &Client,
    table: &Table,
    unit: &WorkUnit,
    sink: SinkConfig,
    chunk_size: u64,
    progress: &Arc<dyn Progress>,
) -> Result<Vec<Chunk>> {
    let sql = copy_out_sql(table, unit.ctid_from, unit.ctid_to);
    let what = || format!("copying table {}", table.display_name());
    let root = sink.root.clone();
    let (tx, handle) = spawn_sink(sink);
    let result = async {
        let stream = client
            .copy_out(sql.as_str())
            .await
            .map_err(|e| Error::query(what(), e))?;
        futures_util::pin_mut!(stream);
        let mut splitter = Splitter::new(table.copy_format, chunk_size);
        let mut batch: Vec<Piece> = Vec::new();
        let mut batch_bytes = 0usize;
        while let Some(data) = stream.next().await {
            let data = data.map_err(|e| Error::query(what(), e))?;
            batch_bytes += data.len();
            let before = batch.len();
            splitter.push(data, &mut batch).map_err(|e| {
                Error::Refused(format!(
                    "{}: server sent a malformed COPY stream: {e}",
                    what()
                ))
            })?;
            let cut = batch[before..]
                .iter()
                .any(|p| matches!(p, Piece::EndChunk { .. }));
            if batch_bytes >= BATCH_BYTES || cut {
                progress.add_bytes(batch_bytes as u64);
                batch_bytes = 0;
                if tx.send(std::mem::take(&mut batch)).await.is_err() {
                    return Ok(false); // the sink failed; its error is reported below
                }
            }
        }
        splitter
            .finish(&mut batch)
            .map_err(|e| Error::Refused(format!("{}: COPY stream ended badly: {e}", what())))?;
        progress.add_bytes(batch_bytes as u64);
        Ok::<bool, Error>(tx.send(batch).await.is_ok())
    }
    .await;
    drop(tx);
    crate::source::sink::join_unit(result, handle, &root, &what()).await
}

/// The format name used in chunk file names.
pub fn kind_of(format: CopyFormat) -> &'static str {
    match format {
        CopyFormat::Binary => "bin",
        CopyFormat::Text => "txt",
    }
}
