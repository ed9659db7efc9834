//! Where the app's [`Settings`] live between runs: a JSON file written atomically (temp file + rename), so a
//! crash or a full disk mid-save leaves the previous settings, never a truncated file. eframe's own storage,
//! which truncates and rewrites its file in place, keeps only the window's size and egui's state (and, until the
//! first save here, the settings of versions before this file, taken over once).

use super::Settings;
use crate::fsutil::write_atomic;
use std::path::{Path, PathBuf};

/// Where eframe's storage kept the settings before they got a file of their own.
const LEGACY_KEY: &str = "mobilenetv3-studio";

/// The settings file and what was last written to it (saving is skipped while nothing changed).
#[derive(Debug, Default)]
pub struct SettingsFile {
    path: Option<PathBuf>,
    saved: Option<String>,
    /// The last save error shown, so that a folder that stays unwritable is reported once, not every 30 s.
    reported: Option<String>,
}

impl SettingsFile {
    pub fn new(path: Option<PathBuf>) -> Self {
        SettingsFile { path, saved: None, reported: None }
    }

    /// [`Self::load`] with the legacy settings from eframe's storage.
    pub(crate) fn load_from(&mut self, storage: Option<&dyn eframe::Storage>) -> (Settings, Option<String>) {
        self.load(storage.and_then(|s| eframe::get_value(s, LEGACY_KEY)))
    }

    /// [`Self::save`], then drops the legacy settings from eframe's storage: once this file holds the settings,
    /// deleting it must bring back the defaults, not the settings of an old version.
    pub(crate) fn save_to(&mut self, settings: &Settings, storage: &mut dyn eframe::Storage) -> Result<(), String> {
        self.save(settings)?;
        if self.saved.is_some() && storage.get_string(LEGACY_KEY).is_some() {
            storage.remove_string(LEGACY_KEY);
        }
        Ok(())
    }

    /// The saved settings, else `legacy` (settings from before this file existed), else the defaults. A file that
    /// cannot be read is moved aside to `<file>.unreadable` rather than overwritten by the next save; the
    /// returned message says so, and the defaults are used.
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
        (Settings::default(), Some(message))
    }

    /// Writes `settings` (atomically) if they differ from what the file holds. An error is returned once; the
    /// same error again (the next try, 30 s later) is not.
    pub fn save(&mut self, settings: &Settings) -> Result<(), String> {
        let Some(path) = &self.path else { return Ok(()) };
        let text = serde_json::to_string_pretty(settings).map_err(|e| e.to_string())?;
        if self.saved.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        if let Err(e) = write_atomic(path, text.as_bytes()) {
            let message = format!("saving the settings to {}: {e}", path.display());
            if self.reported.as_deref() == Some(message.as_str()) {
                return Ok(());
            }
            self.reported = Some(message.clone());
            return Err(message);
        }
        self.saved = Some(text);
        self.reported = None;
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
    use eframe::Storage as _;

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
        let (s, problem) = file.load(Some(Settings { tab: Some(Tab::Latency), ..Default::default() }));
        assert_eq!(s.tab, None, "the defaults, as the message says");
        let problem = problem.expect("an unreadable file is reported");
        assert!(problem.contains("unreadable") && problem.contains("settings.json.unreadable"), "{problem}");
        assert_eq!(std::fs::read(aside_path(&path)).unwrap(), &text[..text.len() / 2]);
        file.save(&saved).unwrap();
        assert!(path.is_file());
    }

    /// eframe's storage as the app gets it: a key-value map.
    #[derive(Default)]
    struct Storage(std::collections::HashMap<String, String>);

    impl eframe::Storage for Storage {
        fn get_string(&self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }
        fn set_string(&mut self, key: &str, value: String) {
            self.0.insert(key.into(), value);
        }
        fn remove_string(&mut self, key: &str) {
            self.0.remove(key);
        }
        fn flush(&mut self) {}
    }

    #[test]
    fn the_settings_of_an_older_version_are_taken_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        let mut storage = Storage::default();
        // What versions before settings.json wrote into eframe's storage.
        eframe::set_value(&mut storage, LEGACY_KEY, &Settings { tab: Some(Tab::Evaluate), ..Default::default() });
        let mut file = SettingsFile::new(Some(path.clone()));
        let (s, _) = file.load_from(Some(&storage));
        assert_eq!(s.tab, Some(Tab::Evaluate));
        file.save_to(&s, &mut storage).unwrap();
        assert!(storage.get_string(LEGACY_KEY).is_none(), "the old copy is dropped once the file holds the settings");
        // Deleting the file now resets to the defaults.
        std::fs::remove_file(&path).unwrap();
        let (s, problem) = SettingsFile::new(Some(path)).load_from(Some(&storage));
        assert_eq!((s.tab, problem), (None, None));
    }

    #[test]
    fn a_folder_that_takes_no_settings_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config"), b"a file where the folder should be").unwrap();
        let mut file = SettingsFile::new(Some(dir.path().join("config/settings.json")));
        let err = file.save(&Settings::default()).unwrap_err();
        assert!(err.contains("saving the settings to"), "{err}");
        assert_eq!(file.save(&Settings::default()), Ok(()), "the same error is not shown again");
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
