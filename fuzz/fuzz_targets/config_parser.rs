//! The coordinator's config file: a validated config or a named error, never a panic.
#![no_main]

use fedra_coordinator::config::{Config, RawConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(raw) = RawConfig::from_toml(text, "fuzz.toml")
    {
        let _ = Config::validate(raw);
    }
});
