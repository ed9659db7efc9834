//! Where the app's [`Settings`] live between runs: a JSON file written atomically (temp file + rename), so a
//! crash or a full disk mid-save leaves the previous settings, never a truncated file. eframe's own storage,
//! which truncates and rewrites its file in place, keeps only the window's size and egui's state.

use super::Settings;
use crate::fsutil::write_atomic;
use std::path::{Path, PathBuf};

/// The settings file and what was last written to it (saving is skipped while nothing changed).
#[derive(Debug, Default)]
pub struct SettingsFile {
    path: Option<PathBuf>,
    saved: Option<String>,
}

impl SettingsFile {
    pub fn new(path: Option<PathBuf>) -> Self {
        SettingsFile { path, saved: None }
    }

    /// The saved settings, else `legacy` (settings from before this file existed), else the defaults. A file that
    /// cannot be read is moved aside to `<file>.unreadable` rather than overwritten by the next save; the
    /// returned message says so.
    pub fn load(&mut self, legacy: Option<Settings>) -> (Settings, Option<String>) {
        let Some(path) = &self.path else { return (legacy.unwrap_or_default(), None) };
        let problem = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<Settings>(&bytes) {
                Ok(s) => {
                    self.saved = String::from_utf8(bytes).ok();
                    return (s, None);
                }
                Err(e) => e.to_string(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (legacy.unwrap_or_default(), None),
            Err(e) => e.to_string(),
        };
        let aside = aside_path(path);
        let message = match std::fs::rename(path, &aside) {
            Ok(()) => format!("the settings were unreadable, kept as {} ({problem}); defaults in use", aside.display()),
            Err(e) => {
                format!("the settings {} are unreadable ({problem}) and could not be moved aside: {e}", path.display())
            }
        };
        (legacy.unwrap_or_default(), Some(message))
    }

    /// Writes `settings` (atomically) if they differ from what the file holds.
    pub fn save(&mut self, settings: &Settings) -> Result<(), String> {
        let Some(path) = &self.path else { return Ok(()) };
        let text = serde_json::to_string_pretty(settings).map_err(|e| e.to_string())?;
        if self.saved.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        write_atomic(path, text.as_bytes()).map_err(|e| format!("saving the settings to {}: {e}", path.display()))?;
        self.saved = Some(text);
        Ok(())
    }
}

fn aside_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".unreadable");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Tab;

    #[test]
    fn settings_come_back_and_an_unreadable_file_is_kept_aside_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/settings.json");
        let mut file = SettingsFile::new(Some(path.clone()));
        // No file yet: the legacy settings (eframe's storage) are taken over.
        let legacy = Settings { tab: Some(Tab::Latency), ..Default::default() };
        let (s, problem) = file.load(Some(legacy));
        assert_eq!((s.tab, problem), (Some(Tab::Latency), None));
        let saved = Settings { tab: Some(Tab::Evaluate), model: Some("m.safetensors".into()), ..Default::default() };
        file.save(&saved).unwrap();
        let (s, problem) = SettingsFile::new(Some(path.clone())).load(Some(Settings::default()));
        assert_eq!((s.tab, s.model.as_deref(), problem), (Some(Tab::Evaluate), Some(Path::new("m.safetensors")), None));
        // No temp files are left beside it.
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);

        // A file cut short (what an in-place write leaves after a crash) is moved aside with a message.
        let text = std::fs::read(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let mut file = SettingsFile::new(Some(path.clone()));
        let (s, problem) = file.load(None);
        assert_eq!(s.tab, None);
        let problem = problem.expect("an unreadable file is reported");
        assert!(problem.contains("unreadable") && problem.contains("settings.json.unreadable"), "{problem}");
        assert_eq!(std::fs::read(aside_path(&path)).unwrap(), &text[..text.len() / 2]);
        file.save(&saved).unwrap();
        assert!(path.is_file());
    }

    #[test]
    fn an_unchanged_save_does_not_rewrite_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        let mut file = SettingsFile::new(Some(path.clone()));
        let s = Settings::default();
        file.save(&s).unwrap();
        std::fs::remove_file(&path).unwrap();
        file.save(&s).unwrap();
        assert!(!path.exists(), "saved again although nothing changed");
        file.save(&Settings { tab: Some(Tab::Train), ..s }).unwrap();
        assert!(path.exists());
    }
}
