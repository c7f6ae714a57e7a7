//! The options one `POST /image/` may carry: `wait` (query only), `mode`,
//! `threshold` and `mark` (query, or form fields for the page). A bad value is refused with
//! `400`, keyed by the parameter's name, before any byte of the file is stored.

use axum::http::StatusCode;
use faces_detect::{Mark, Mode};

use crate::error::ApiError;
use crate::submission::Options;

/// The longest a client may ask the upload to wait for its result.
pub const MAX_WAIT_SECS: u64 = 60;
/// A form field's value longer than this cannot be a valid option.
pub const MAX_FIELD_BYTES: usize = 64;
/// The form fields read as options.
pub const OPTION_FIELDS: [&str; 3] = ["mode", "threshold", "mark"];

#[derive(Debug, Default, Clone, Copy)]
pub struct Requested {
    /// Seconds to wait for the result; 0 or absent answers `202` at once.
    pub wait: u64,
    pub mode: Option<Mode>,
    pub threshold: Option<f64>,
    pub mark: Option<Mark>,
}

impl Requested {
    /// Reads the query string; unknown parameters are ignored, as web forms expect.
    pub fn from_query(query: Option<&str>) -> Result<Self, ApiError> {
        let mut requested = Self::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match name.as_ref() {
                "wait" => requested.wait = parse_wait(&value)?,
                "mode" | "threshold" | "mark" => requested.set(&name, &value)?,
                _ => {}
            }
        }
        Ok(requested)
    }

    /// Sets `mode`, `threshold` or `mark` from a query parameter or form field. A form
    /// field does not override the query string's value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ApiError> {
        match name {
            "mode" => self.mode = Some(parse_mode(value)?),
            "threshold" => self.threshold = Some(parse_threshold(value)?),
            "mark" => self.mark = Some(parse_mark(value)?),
            _ => {}
        }
        Ok(())
    }

    /// Only the values not given already.
    pub fn fill_from(&mut self, form: Requested) {
        self.mode = self.mode.or(form.mode);
        self.threshold = self.threshold.or(form.threshold);
        self.mark = self.mark.or(form.mark);
    }

    /// The options the submission is detected with: the request's, else the server's.
    pub fn options(
        &self,
        default_mode: Mode,
        default_threshold: f32,
        default_mark: Mark,
    ) -> Options {
        Options::new(
            self.mode.unwrap_or(default_mode),
            self.threshold.unwrap_or(f64::from(default_threshold)),
            self.mark.unwrap_or(default_mark),
        )
    }
}

fn bad(field: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, field, message.to_owned())
}

fn parse_wait(value: &str) -> Result<u64, ApiError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|w| *w <= MAX_WAIT_SECS)
        .ok_or_else(|| bad("wait", "Enter a whole number of seconds from 0 to 60."))
}

fn parse_mode(value: &str) -> Result<Mode, ApiError> {
    match value.trim() {
        "fast" => Ok(Mode::Fast),
        "accurate" => Ok(Mode::Accurate),
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "mode",
            format!("Select a valid choice. “{other}” is not one of the available choices: fast, accurate."),
        )),
    }
}

fn parse_mark(value: &str) -> Result<Mark, ApiError> {
    value.trim().parse().map_err(|_: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "mark",
            format!("Select a valid choice. “{}” is not one of the available choices: box, blur, pixelate, none.", value.trim()),
        )
    })
}

fn parse_threshold(value: &str) -> Result<f64, ApiError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|t| (0.0..=1.0).contains(t))
        .ok_or_else(|| bad("threshold", "Enter a number from 0 to 1."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(query: &str) -> (String, String) {
        let error = Requested::from_query(Some(query)).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST, "{query}");
        (error.field.to_owned(), error.message)
    }

    #[test]
    fn good_values_are_read_and_unknown_parameters_ignored() {
        let r = Requested::from_query(Some("wait=60&mode=accurate&threshold=0.25&mark=blur&x=1"))
            .unwrap();
        assert_eq!(r.wait, 60);
        assert_eq!(r.mode, Some(Mode::Accurate));
        assert_eq!(r.threshold, Some(0.25));
        assert_eq!(r.mark, Some(Mark::Blur));
        let none = Requested::from_query(None).unwrap();
        assert_eq!(
            (none.wait, none.mode, none.threshold, none.mark),
            (0, None, None, None)
        );
        let options = none.options(Mode::Fast, 0.5, Mark::Pixelate);
        assert_eq!(
            (options.mode, options.threshold, options.mark),
            (Mode::Fast, 0.5, Mark::Pixelate)
        );
    }

    #[test]
    fn each_bad_value_is_keyed_by_its_parameter() {
        for query in ["wait=61", "wait=-1", "wait=1.5", "wait="] {
            assert_eq!(refused(query).0, "wait", "{query}");
        }
        for query in ["mode=turbo", "mode=", "mode=FAST"] {
            assert_eq!(refused(query).0, "mode", "{query}");
        }
        for query in [
            "threshold=1.01",
            "threshold=-0.1",
            "threshold=high",
            "threshold=NaN",
        ] {
            assert_eq!(refused(query).0, "threshold", "{query}");
        }
        for query in ["mark=boxes", "mark=", "mark=BLUR"] {
            assert_eq!(refused(query).0, "mark", "{query}");
        }
        assert!(refused("mode=turbo").1.contains("“turbo”"));
        assert_eq!(
            refused("mark=sepia").1,
            "Select a valid choice. “sepia” is not one of the available choices: box, blur, pixelate, none."
        );
    }

    #[test]
    fn the_query_string_wins_over_form_fields() {
        let mut query = Requested::from_query(Some("mode=accurate")).unwrap();
        let mut form = Requested::default();
        form.set("mode", "fast").unwrap();
        form.set("threshold", "0.7").unwrap();
        query.fill_from(form);
        assert_eq!(query.mode, Some(Mode::Accurate));
        assert_eq!(query.threshold, Some(0.7));
    }
}
