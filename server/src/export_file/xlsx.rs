//! The XLSX file of an export, written as the rows come: each sheet's XML goes straight into
//! the zip, deflated on the way, so no part of the file waits on disk or in memory.
//!
//! rust_xlsxwriter wrote the whole file before. Its constant-memory mode keeps every sheet's
//! rows in a temporary file until the workbook is saved (about 330 MB per million rows), and
//! only then compresses them. At 10M rows those 3.3 GB of dirty pages passed the kernel's
//! writeback threshold and each row cost 12% more than at 1M. So the rows are written here,
//! as exactly the XML rust_xlsxwriter writes for them, and every other part of the file
//! (content types, relationships, theme, styles, workbook, document properties) is still
//! rust_xlsxwriter's: once the last row is in, it makes an empty workbook with as many sheets,
//! and those parts are copied from it unchanged. A test compares the whole file, part by part,
//! with the one rust_xlsxwriter writes for the same rows.

use std::borrow::Cow;
use std::io::{Cursor, Write};

use anyhow::{Context, Result};
use rust_xlsxwriter::{ExcelDateTime, Format, IntoExcelDateTime, Workbook};
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use super::cells::{looks_like_a_formula, Cell};
use crate::model::UserColumn;

/// Excel's limits: rows per sheet (the header included) and characters per cell.
pub const ROWS_PER_SHEET: u32 = 1_048_576;
pub const MAX_CELL_CHARS: usize = 32_767;
/// Excel 365's own level: about 30% faster than the default 6, files about 5% larger.
const ZIP_LEVEL: i64 = 3;
const DATETIME_FORMAT: &str = "yyyy-mm-dd hh:mm:ss";

/// Cell formats, by the number rust_xlsxwriter gives each in styles.xml: the order of first
/// use, which `parts_besides_sheets` follows.
const BOLD: &str = "1";
const QUOTED: &str = "2";
const DATETIME: &str = "3";

/// A sheet up to its column widths; `{view}` is the sheet's view.
const SHEET_START: &str = concat!(
    "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n",
    "<worksheet xmlns=\"http://schemas.openxmlformats.org/spreadsheetml/2006/main\" ",
    "xmlns:r=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships\">",
    "<sheetViews>{view}</sheetViews><sheetFormatPr defaultRowHeight=\"15\"/><cols>",
);
const COLUMNS_END: &str = "</cols><sheetData>";
const SHEET_END: &str = concat!(
    "</sheetData><pageMargins left=\"0.7\" right=\"0.7\" top=\"0.75\" bottom=\"0.75\" ",
    "header=\"0.3\" footer=\"0.3\"/></worksheet>",
);
/// The letters of a file's columns, by position: it has five at most.
const LETTERS: [&str; 5] = ["A", "B", "C", "D", "E"];

/// A column's width in characters, as wide as its usual values.
fn width(column: UserColumn) -> u32 {
    match column {
        UserColumn::Id => 38,
        UserColumn::Email => 32,
        UserColumn::Name => 28,
        UserColumn::Status => 10,
        UserColumn::CreatedAt => 20,
    }
}

/// The `<cols>` of a sheet: each column's width as rust_xlsxwriter stores it (the default
/// font's padding added).
fn column_widths(columns: &[UserColumn]) -> String {
    columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            let n = index + 1;
            format!(
                "<col min=\"{n}\" max=\"{n}\" width=\"{}.7109375\" customWidth=\"1\"/>",
                width(*column)
            )
        })
        .collect()
}

/// An XLSX file being written into `W`: the users' chosen columns, under a header row,
/// 1,048,575 a sheet.
pub struct XlsxWriter<W: Write> {
    zip: ZipWriter<StreamWriter<W>>,
    columns: Vec<UserColumn>,
    /// `<cols>…</cols><sheetData>` of every sheet.
    widths: String,
    sheets: u32,
    rows_in_sheet: u32,
    rows_per_sheet: u32,
    /// One row's XML, reused.
    row: String,
}

impl<W: Write> XlsxWriter<W> {
    /// `rows_per_sheet` counts the header: Excel's limit, or a small one in tests.
    pub fn new(out: W, columns: &[UserColumn], rows_per_sheet: u32) -> Result<Self> {
        anyhow::ensure!(
            columns.len() <= LETTERS.len(),
            "at most {} columns",
            LETTERS.len()
        );
        let mut writer = Self {
            zip: ZipWriter::new_stream(out),
            columns: columns.to_vec(),
            widths: column_widths(columns) + COLUMNS_END,
            sheets: 0,
            rows_in_sheet: 0,
            rows_per_sheet,
            row: String::with_capacity(1024),
        };
        writer.start_sheet()?;
        Ok(writer)
    }

    fn start_sheet(&mut self) -> Result<()> {
        if self.sheets > 0 {
            self.zip.write_all(SHEET_END.as_bytes())?;
        }
        self.sheets += 1;
        let name = format!("xl/worksheets/sheet{}.xml", self.sheets);
        self.zip.start_file(name, file_options())?;
        let view = if self.sheets == 1 {
            r#"<sheetView tabSelected="1" workbookViewId="0"/>"#
        } else {
            r#"<sheetView workbookViewId="0"/>"#
        };
        self.zip
            .write_all(SHEET_START.replace("{view}", view).as_bytes())?;
        self.zip.write_all(self.widths.as_bytes())?;
        self.row.clear();
        self.row.push_str(r#"<row r="1">"#);
        for (letter, column) in LETTERS.iter().zip(&self.columns) {
            push_text_cell(&mut self.row, letter, "1", column.as_str(), Some(BOLD));
        }
        self.row.push_str("</row>");
        self.zip.write_all(self.row.as_bytes())?;
        self.rows_in_sheet = 1;
        Ok(())
    }

    /// One user's cells, in the columns' order.
    pub fn write_row(&mut self, cells: &[Cell]) -> Result<()> {
        if self.rows_in_sheet == self.rows_per_sheet {
            self.start_sheet()?;
        }
        self.rows_in_sheet += 1;
        let mut number = itoa::Buffer::new();
        let r = number.format(self.rows_in_sheet);
        let row = &mut self.row;
        row.clear();
        row.push_str(r#"<row r=""#);
        row.push_str(r);
        row.push_str(r#"">"#);
        let mut id = uuid::Uuid::encode_buffer();
        for (letter, cell) in LETTERS.iter().zip(cells) {
            match cell {
                Cell::Id(user_id) => {
                    push_text_cell(row, letter, r, user_id.hyphenated().encode_lower(&mut id), None)
                }
                Cell::Text(text) => {
                    let cell = fit_cell(text);
                    let format = looks_like_a_formula(&cell).then_some(QUOTED);
                    push_text_cell(row, letter, r, &cell, format);
                }
                Cell::Time(at) => {
                    let serial = at.naive_utc().to_excel_serial_date();
                    for part in [r#"<c r=""#, letter, r, r#"" s=""#, DATETIME, r#""><v>"#] {
                        row.push_str(part);
                    }
                    row.push_str(zmij::Buffer::new().format_finite(serial));
                    row.push_str("</v></c>");
                }
            }
        }
        row.push_str("</row>");
        self.zip.write_all(row.as_bytes())?;
        Ok(())
    }

    /// Ends the last sheet, adds the workbook's other parts and the zip's directory, and
    /// returns the writer.
    pub fn finish(mut self) -> Result<W> {
        self.zip.write_all(SHEET_END.as_bytes())?;
        let mut parts = ZipArchive::new(Cursor::new(parts_besides_sheets(self.sheets)?))?;
        for index in 0..parts.len() {
            let part = parts.by_index_raw(index)?;
            if !part.name()?.starts_with("xl/worksheets/") {
                self.zip.raw_copy_file(part)?;
            }
        }
        Ok(self.zip.finish()?.into_inner())
    }
}

/// rust_xlsxwriter's options for each part of the file.
fn file_options() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(ZIP_LEVEL))
        .unix_permissions(0o600)
        .last_modified_time(zip::DateTime::default())
}

/// A workbook of `sheets` sheets from rust_xlsxwriter, whose formats are numbered as the
/// rows use them. Its sheets are left out of the export's file; its other parts are the file's.
fn parts_besides_sheets(sheets: u32) -> Result<Vec<u8>> {
    let mut workbook = Workbook::new();
    workbook.set_zip_compression_level(ZIP_LEVEL as u8);
    let first = workbook.add_worksheet();
    // Blank cells register the formats, in their numbers' order, without adding strings.
    first.write_blank(0, 0, &Format::new().set_bold())?;
    first.write_blank(1, 0, &Format::new().set_quote_prefix())?;
    let datetime = Format::new().set_num_format(DATETIME_FORMAT);
    first.write_datetime_with_format(2, 0, ExcelDateTime::from_ymd(2000, 1, 1)?, &datetime)?;
    for _ in 1..sheets {
        workbook.add_worksheet();
    }
    let mut file = Vec::new();
    workbook
        .save_to_writer(&mut file)
        .context("writing the workbook's parts")?;
    Ok(file)
}

/// Cuts a cell to Excel's limit (counted in UTF-16 units, as Excel does), marking the cut.
pub fn fit_cell(cell: &str) -> Cow<'_, str> {
    if cell.len() <= MAX_CELL_CHARS || cell.encode_utf16().count() <= MAX_CELL_CHARS {
        return Cow::Borrowed(cell);
    }
    let mut units = 0;
    let mut cut = String::with_capacity(MAX_CELL_CHARS * 2);
    for c in cell.chars() {
        units += c.len_utf16();
        if units > MAX_CELL_CHARS - 1 {
            break;
        }
        cut.push(c);
    }
    cut.push('…');
    Cow::Owned(cut)
}

/// A string cell, inline as in rust_xlsxwriter's constant-memory mode. An empty string is no
/// cell at all (Excel ignores one).
fn push_text_cell(row: &mut String, column: &str, r: &str, text: &str, format: Option<&str>) {
    if text.is_empty() {
        return;
    }
    for part in [r#"<c r=""#, column, r] {
        row.push_str(part);
    }
    if let Some(format) = format {
        for part in [r#"" s=""#, format] {
            row.push_str(part);
        }
    }
    row.push_str(r#"" t="inlineStr"><is><t"#);
    let edges = ['\t', '\n', ' '];
    if text.starts_with(edges) || text.ends_with(edges) {
        row.push_str(r#" xml:space="preserve""#);
    }
    row.push('>');
    push_escaped(row, text);
    row.push_str("</t></is></c>");
}

/// Text as Excel writes it: XML's escapes, the characters XML cannot hold (controls but tab
/// and newline, U+FFFE and U+FFFF) as `_xHHHH_`, and so the underscore of a literal
/// `_xHHHH_` as `_x005F_`, which makes it read back as written.
fn push_escaped(out: &mut String, text: &str) {
    let plain = |byte: &u8| !matches!(byte, b'&' | b'<' | b'>' | b'_' | 0xEF | 0..=0x08 | 0x0B..=0x1F);
    if text.as_bytes().iter().all(plain) {
        out.push_str(text);
        return;
    }
    for (at, c) in text.char_indices() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0'..='\x08' | '\x0B'..='\x1F' | '\u{FFFE}' | '\u{FFFF}' => {
                out.push_str(&format!("_x{:04X}_", u32::from(c)));
            }
            '_' if looks_like_an_escape(&text.as_bytes()[at..]) => out.push_str("_x005F_"),
            c => out.push(c),
        }
    }
}

/// `_x` and four hex digits and `_`.
fn looks_like_an_escape(text: &[u8]) -> bool {
    text.len() >= 7 && text[1] == b'x' && text[2..6].iter().all(u8::is_ascii_hexdigit) && text[6] == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use std::collections::BTreeMap;
    use std::io::Read;
    use uuid::Uuid;

    #[test]
    fn cuts_cells_at_excels_limit_in_utf16_units() {
        let short = "x".repeat(MAX_CELL_CHARS);
        assert!(matches!(fit_cell(&short), Cow::Borrowed(_)));
        let long = "x".repeat(MAX_CELL_CHARS + 1);
        let cut = fit_cell(&long);
        assert_eq!(cut.encode_utf16().count(), MAX_CELL_CHARS);
        assert!(cut.ends_with('…'));
        // Characters outside the BMP count twice and are never split.
        let emoji = "😀".repeat(MAX_CELL_CHARS);
        let cut = fit_cell(&emoji);
        assert!(cut.encode_utf16().count() <= MAX_CELL_CHARS);
        assert!(cut.ends_with('…'));
    }

    use crate::export_file::cells::UserRow;

    fn users() -> Vec<UserRow> {
        let at = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc);
        let names = [
            "Ada Lovelace",
            "=HYPERLINK(\"http://evil.example\",\"x\")",
            " leading and trailing ",
            "\tTabbed",
            "line\nbreak\r\nand return",
            "controls \u{1}\u{8}\u{b}\u{1f} and non-characters \u{fffe}\u{ffff}",
            "literal _x0041_ and _x0041_x0042_ and _x004_ and _xZZZZ_ and _x12",
            "XML & <markup> \"quotes\" 'apostrophes'",
            "",
            "emoji 😀 and accents é ñ 中文",
            "+1-2",
        ];
        let mut users: Vec<UserRow> = names
            .iter()
            .enumerate()
            .map(|(n, name)| UserRow {
                id: Uuid::new_v4(),
                email: if n == 0 {
                    "@first.example".into()
                } else {
                    format!("user{n}@example.com")
                },
                name: name.to_string(),
                status: ["active", "suspended", "deleted"][n % 3].into(),
                created_at: at([
                    "2025-01-03T10:15:22.123456Z",
                    "1900-02-28T23:59:59Z",
                    "2024-02-29T00:00:00Z",
                ][n % 3]),
            })
            .collect();
        users[3].name = "x".repeat(MAX_CELL_CHARS + 10);
        users
    }

    /// The file the export wrote before this module: rust_xlsxwriter's constant-memory mode.
    fn rust_xlsxwriters_file(users: &[UserRow], rows_per_sheet: u32) -> Vec<u8> {
        let mut workbook = Workbook::new();
        workbook.set_zip_compression_level(ZIP_LEVEL as u8);
        let (bold, quoted) = (Format::new().set_bold(), Format::new().set_quote_prefix());
        let datetime = Format::new().set_num_format(DATETIME_FORMAT);
        let mut sheet = None;
        for (n, user) in users.iter().enumerate() {
            let row = (n as u32 % (rows_per_sheet - 1)) + 1;
            if row == 1 {
                let new = workbook.add_worksheet_with_constant_memory().unwrap();
                let header = exports_spec::files::USER_COLUMNS;
                for (column, (name, width)) in header.iter().zip([38.0, 32.0, 28.0, 10.0, 20.0]).enumerate() {
                    new.set_column_width(column as u16, width).unwrap();
                    new.write_string_with_format(0, column as u16, *name, &bold)
                        .unwrap();
                }
                sheet = Some(new);
            }
            let sheet = sheet.as_mut().unwrap();
            sheet
                .write_string(row, 0, user.id.hyphenated().to_string())
                .unwrap();
            for (column, text) in [(1, &user.email), (2, &user.name), (3, &user.status)] {
                let cell = fit_cell(text);
                if looks_like_a_formula(&cell) {
                    sheet
                        .write_string_with_format(row, column, cell, &quoted)
                        .unwrap();
                } else {
                    sheet.write_string(row, column, cell).unwrap();
                }
            }
            sheet
                .write_datetime_with_format(row, 4, user.created_at.naive_utc(), &datetime)
                .unwrap();
        }
        let mut file = Vec::new();
        workbook.save_to_writer(&mut file).unwrap();
        file
    }

    fn ours(users: &[UserRow], rows_per_sheet: u32) -> Vec<u8> {
        let mut writer = XlsxWriter::new(Vec::new(), &UserColumn::ALL, rows_per_sheet).unwrap();
        for user in users {
            writer.write_row(&user.cells(&UserColumn::ALL)).unwrap();
        }
        writer.finish().unwrap()
    }

    fn parts(file: &[u8]) -> BTreeMap<String, String> {
        let mut archive = ZipArchive::new(Cursor::new(file)).unwrap();
        (0..archive.len())
            .map(|index| {
                let mut part = archive.by_index(index).unwrap();
                let mut text = String::new();
                part.read_to_string(&mut text).unwrap();
                (part.name().unwrap().to_string(), text)
            })
            .collect()
    }

    #[test]
    fn the_file_is_the_one_rust_xlsxwriter_writes_for_the_same_rows() {
        let users = users();
        // Four rows a sheet: three users under each header, so the rows fill four sheets.
        let (ours, reference) = (parts(&ours(&users, 4)), parts(&rust_xlsxwriters_file(&users, 4)));
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            reference.keys().collect::<Vec<_>>()
        );
        assert!(ours.contains_key("xl/worksheets/sheet4.xml"));
        for (name, text) in &reference {
            match name.as_str() {
                // Its creation time.
                "docProps/core.xml" => continue,
                // The range a sheet spans comes before its rows, which a stream cannot know;
                // the element is optional, and readers find the range from the cells.
                sheet if sheet.starts_with("xl/worksheets/") => {
                    let (before, rest) = text.split_once("<dimension ref=\"").unwrap();
                    let (_, after) = rest.split_once("\"/>").unwrap();
                    assert_eq!(ours[sheet], format!("{before}{after}"), "{sheet}");
                }
                _ => assert_eq!(&ours[name], text, "{name}"),
            }
        }
    }

    #[test]
    fn calamine_reads_every_cell_back() {
        use calamine::{Data, DataType, Reader};
        let users = users();
        let file = ours(&users, 5);
        let mut workbook: calamine::Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(file)).unwrap();
        assert_eq!(workbook.sheet_names(), ["Sheet1", "Sheet2", "Sheet3"]);
        let mut read = Vec::new();
        for name in workbook.sheet_names() {
            let range = workbook.worksheet_range(&name).unwrap();
            let mut rows = range.rows();
            let header: Vec<String> = rows.next().unwrap().iter().map(Data::to_string).collect();
            assert_eq!(header, exports_spec::files::USER_COLUMNS);
            read.extend(rows.map(|row| {
                let text: Vec<String> = row[..4].iter().map(Data::to_string).collect();
                (text, row[4].get_datetime().map(|at| at.as_f64()))
            }));
        }
        let expected: Vec<_> = users
            .iter()
            .map(|user| {
                let text = [&user.id.to_string(), &user.email, &user.name, &user.status];
                let text: Vec<String> = text.iter().map(|cell| fit_cell(cell).into_owned()).collect();
                (text, Some(user.created_at.naive_utc().to_excel_serial_date()))
            })
            .collect();
        assert_eq!(read, expected);
    }
}
