//! A training run's history as CSV.

/// A run's history as CSV, one row per epoch.
pub fn history_csv(h: &crate::train::History) -> String {
    let mut s = String::from("epoch,train_loss,train_top1,val_loss,top1,top5,lr,img_per_s,elapsed_s\n");
    for r in &h.epochs {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.epoch, r.train_loss, r.train_top1, r.val_loss, r.top1, r.top5, r.lr, r.img_per_s, r.elapsed_s
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_history_exports_one_row_per_epoch() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("trained_models/mobilenetv3_small_0.25.history.json");
        let h = crate::train::History::load(&path).unwrap();
        let csv = history_csv(&h);
        assert_eq!(csv.lines().count(), 1 + h.epochs.len());
        assert!(csv.lines().nth(19).unwrap().starts_with("19,"));
    }
}
