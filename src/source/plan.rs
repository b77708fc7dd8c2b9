//! The plan: which work units the backup runs, in which order.
//!
//! A unit is one COPY: a whole table, or one ctid range of a table larger than the split
//! threshold. Units are sized by `pg_table_size` (heap + TOAST) and run largest first, so that
//! a TOAST-heavy table with few heap pages does not start last and become the backup's tail.

use crate::source::probe::TableInfo;

/// One COPY to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkUnit {
    /// Index into the probe's (and manifest's) table list.
    pub table: usize,
    /// Index of the unit within its table.
    pub index: u32,
    pub ctid_from: Option<u32>,
    pub ctid_to: Option<u32>,
    /// Estimated bytes this unit reads, for scheduling and progress.
    pub est_bytes: u64,
}

/// Splits every table into units and orders them largest first.
pub fn plan_units(tables: &[TableInfo], split_larger_than: u64) -> Vec<Vec<WorkUnit>> {
    tables
        .iter()
        .enumerate()
        .map(|(i, t)| split_table(i, t, split_larger_than))
        .collect()
}

/// Units of one table: one unit, or `ceil(size / threshold)` page ranges. The first range
/// starts at the beginning and the last is open-ended, so rows on pages added since the size
/// was read are still covered.
pub fn split_table(table: usize, t: &TableInfo, split_larger_than: u64) -> Vec<WorkUnit> {
    let size = t.size_bytes.max(0) as u64;
    let pages = u64::from(t.heap_pages);
    // An extension's configuration table is read with its condition, in one COPY.
    let wanted =
        if split_larger_than == 0 || size <= split_larger_than || t.extension_config.is_some() {
            1
        } else {
            size.div_ceil(split_larger_than)
        };
    let n = wanted.min(pages.max(1));
    if n <= 1 {
        return vec![WorkUnit {
            table,
            index: 0,
            ctid_from: None,
            ctid_to: None,
            est_bytes: size,
        }];
    }
    (0..n)
        .map(|k| {
            let from = (pages * k / n) as u32;
            let to = (pages * (k + 1) / n) as u32;
            WorkUnit {
                table,
                index: k as u32,
                ctid_from: (k > 0).then_some(from),
                ctid_to: (k + 1 < n).then_some(to),
                est_bytes: size / n,
            }
        })
        .collect()
}

/// All units of all tables in the order workers should take them: largest first.
pub fn schedule(units: &[Vec<WorkUnit>]) -> Vec<WorkUnit> {
    let mut all: Vec<WorkUnit> = units.iter().flatten().cloned().collect();
    all.sort_by(|a, b| {
        b.est_bytes
            .cmp(&a.est_bytes)
            .then(a.table.cmp(&b.table))
            .then(a.index.cmp(&b.index))
    });
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(size: i64, pages: u32) -> TableInfo {
        TableInfo {
            oid: 1,
            schema: "s".into(),
            name: "t".into(),
            relkind: "r".into(),
            columns: vec![],
            size_bytes: size,
            heap_pages: pages,
            row_estimate: 0,
            not_binary_because: None,
            extension_config: None,
        }
    }

    #[test]
    fn small_table_is_one_open_unit() {
        let u = split_table(0, &table(100, 10), 1000);
        assert_eq!(u.len(), 1);
        assert_eq!((u[0].ctid_from, u[0].ctid_to), (None, None));
    }

    #[test]
    fn big_table_ranges_cover_every_page_without_overlap() {
        let u = split_table(0, &table(10_000, 97), 1000);
        assert_eq!(u.len(), 10);
        assert_eq!(u[0].ctid_from, None);
        assert_eq!(u[9].ctid_to, None);
        for w in u.windows(2) {
            assert_eq!(w[0].ctid_to, w[1].ctid_from, "ranges must touch");
        }
    }

    #[test]
    fn toast_heavy_table_splits_no_finer_than_its_pages() {
        // A gigabyte out of line on three heap pages: three ranges at most.
        let u = split_table(0, &table(1 << 30, 3), 1 << 20);
        assert_eq!(u.len(), 3);
    }

    #[test]
    fn schedule_puts_toast_heavy_table_first() {
        let tables = vec![table(50_000, 5000), table(1 << 30, 4)];
        let s = schedule(&plan_units(&tables, 0));
        assert_eq!(s[0].table, 1, "the bytea table is biggest by pg_table_size");
    }
}
