//! The cells of an export, as every format writes them: one user's cells in the file's
//! column order, the defusing of formula-like values and the timestamp's text.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::UserColumn;

/// One cell of an exported user's row: its text borrowed from the query's row (CSV, JSON
/// Lines) or owned (XLSX, whose rows cross to another thread).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<T = String> {
    Id(Uuid),
    Text(T),
    Time(DateTime<Utc>),
}

impl<'r> Cell<&'r str> {
    /// The cell of `column` at `index` of a row of the export's query, which selects the
    /// file's columns in its order (`UserQuery::select_sql`): each column's type, stated once.
    pub fn read(row: &'r tokio_postgres::Row, index: usize, column: UserColumn) -> Self {
        match column {
            UserColumn::Id => Cell::Id(row.get(index)),
            UserColumn::CreatedAt => Cell::Time(row.get(index)),
            UserColumn::Email | UserColumn::Name | UserColumn::Status => Cell::Text(row.get(index)),
        }
    }

    pub fn into_owned(self) -> Cell {
        match self {
            Cell::Id(id) => Cell::Id(id),
            Cell::Text(text) => Cell::Text(text.to_string()),
            Cell::Time(at) => Cell::Time(at),
        }
    }
}

/// One exported user with every column, for the tests of the writers.
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
impl UserRow {
    /// The cells of `columns`, in that order.
    pub fn cells(&self, columns: &[UserColumn]) -> Vec<Cell> {
        columns
            .iter()
            .map(|column| match column {
                UserColumn::Id => Cell::Id(self.id),
                UserColumn::Email => Cell::Text(self.email.clone()),
                UserColumn::Name => Cell::Text(self.name.clone()),
                UserColumn::Status => Cell::Text(self.status.clone()),
                UserColumn::CreatedAt => Cell::Time(self.created_at),
            })
            .collect()
    }
}

/// Whether a spreadsheet would evaluate a cell starting so (`=1+1`, `@SUM(..)`, `-2+3`, ...).
pub(crate) fn looks_like_a_formula(cell: &str) -> bool {
    matches!(
        cell.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

/// A CSV cell a spreadsheet would evaluate gets a leading `'`, which makes every spreadsheet
/// program treat it as text.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    if looks_like_a_formula(cell) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// RFC 3339 in UTC, with as many fractional digits as needed (0, 3, 6 or 9), like chrono's
/// `SecondsFormat::AutoSi`, written into a reused buffer: this runs once per exported row.
pub fn write_timestamp(out: &mut String, at: &DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    // Fixed-width digits by hand: `format!` machinery was about 6% of a CSV export's CPU samples.
    fn digits(out: &mut String, value: u32, width: u32) {
        for position in (0..width).rev() {
            out.push(char::from(b'0' + (value / 10u32.pow(position) % 10) as u8));
        }
    }
    let year = at.year();
    if (0..=9999).contains(&year) {
        digits(out, year as u32, 4);
    } else {
        out.push_str(&format!("{year:+05}"));
    }
    out.push('-');
    digits(out, at.month(), 2);
    out.push('-');
    digits(out, at.day(), 2);
    out.push('T');
    digits(out, at.hour(), 2);
    out.push(':');
    digits(out, at.minute(), 2);
    out.push(':');
    digits(out, at.second(), 2);
    match at.nanosecond() % 1_000_000_000 {
        0 => {}
        n if n % 1_000_000 == 0 => {
            out.push('.');
            digits(out, n / 1_000_000, 3);
        }
        n if n % 1_000 == 0 => {
            out.push('.');
            digits(out, n / 1_000, 6);
        }
        n => {
            out.push('.');
            digits(out, n, 9);
        }
    }
    out.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SecondsFormat;

    #[test]
    fn neutralises_formula_starts_only() {
        for dangerous in ["=1+1", "+41", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(dangerous), format!("'{dangerous}"));
        }
        for safe in ["ada@example.com", "Ada", "", "a=b", " =x"] {
            assert!(matches!(neutralise(safe), Cow::Borrowed(_)), "{safe:?}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_like_chronos_auto_si() {
        for text in [
            "2025-01-03T10:15:22.5+02:00",
            "2025-01-03T10:15:22+00:00",
            "0999-12-31T23:59:59.123456-01:00",
            "2024-02-29T00:00:00.000000001Z",
        ] {
            let at = DateTime::parse_from_rfc3339(text).unwrap().to_utc();
            let mut written = String::new();
            write_timestamp(&mut written, &at);
            assert_eq!(written, at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
    }
}
