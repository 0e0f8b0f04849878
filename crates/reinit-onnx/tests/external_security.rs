//! Every refusal of the external-data security model, each with a clear error
//! naming the tensor and the location, and no panic.

mod common;

use std::path::Path;

use common::*;
use reinit_onnx::{Edits, Model, SaveOptions};

fn write_model(dir: &Path, entries: &[(&str, &str)]) -> std::path::PathBuf {
    let path = dir.join("m.onnx");
    std::fs::write(&path, external_model(entries)).unwrap();
    path
}

fn refusal(dir: &Path, entries: &[(&str, &str)]) -> String {
    let err = Model::load(write_model(dir, entries)).unwrap_err();
    assert!(err.is_unsafe_input(), "not classified unsafe: {err}");
    let msg = err.to_string();
    assert!(msg.contains("'W'"), "error does not name the tensor: {msg}");
    msg
}

#[test]
fn a_valid_external_tensor_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), f32_bytes(&[1.0, 2.0, 3.0, 4.0])).unwrap();
    let model = Model::load(write_model(dir.path(), &[("location", "w.bin")])).unwrap();
    assert_eq!(
        model.read_f64(model.find_tensor("W").unwrap()).unwrap(),
        vec![1.0, 2.0, 3.0, 4.0]
    );
}

#[test]
fn parent_and_absolute_locations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    std::fs::write(dir.path().join("w.bin"), f32_bytes(&[0.0; 4])).unwrap();
    assert!(refusal(&inner, &[("location", "../w.bin")]).contains(".."));
    let absolute = dir.path().join("w.bin");
    refusal(&inner, &[("location", absolute.to_str().unwrap())]);
    refusal(&inner, &[("location", "sub/../../w.bin")]);
    refusal(&inner, &[("location", "")]);
}

#[test]
fn symlinked_file_and_parent_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("w.bin"), f32_bytes(&[0.0; 4])).unwrap();
    std::os::unix::fs::symlink(outside.path().join("w.bin"), dir.path().join("link.bin")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("sub")).unwrap();
    assert!(refusal(dir.path(), &[("location", "link.bin")]).contains("symbolic link"));
    assert!(refusal(dir.path(), &[("location", "sub/w.bin")]).contains("symbolic link"));
}

#[test]
fn hardlinked_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), f32_bytes(&[0.0; 4])).unwrap();
    std::fs::hard_link(dir.path().join("w.bin"), dir.path().join("alias.bin")).unwrap();
    assert!(refusal(dir.path(), &[("location", "w.bin")]).contains("hard link"));
}

#[test]
fn bad_offsets_lengths_and_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), f32_bytes(&[0.0; 4])).unwrap();
    refusal(dir.path(), &[("location", "w.bin"), ("length", "-16")]);
    refusal(
        dir.path(),
        &[("location", "w.bin"), ("length", "18446744073709551615")],
    );
    refusal(
        dir.path(),
        &[("location", "w.bin"), ("offset", "8"), ("length", "16")],
    );
    refusal(dir.path(), &[("location", "w.bin"), ("offset", "-1")]);
    assert!(refusal(dir.path(), &[("location", "w.bin"), ("__class__", "x")]).contains("unknown"));
    // The file holds fewer bytes than the dims need.
    std::fs::write(dir.path().join("short.bin"), f32_bytes(&[0.0; 3])).unwrap();
    refusal(dir.path(), &[("location", "short.bin")]);
    // A directory, not a file.
    std::fs::create_dir(dir.path().join("d")).unwrap();
    refusal(dir.path(), &[("location", "d")]);
}

#[test]
fn from_bytes_without_a_directory_refuses_external_data() {
    let err = Model::from_bytes(external_model(&[("location", "w.bin")]), None).unwrap_err();
    assert!(err.is_unsafe_input(), "{err}");
}

#[test]
fn saving_never_writes_into_the_data_file_being_read() {
    // In-place save of a model whose data file has the default output data name:
    // the new data goes to a temporary file renamed to the other default name
    // (`m.onnx.1.data`), so the mapping we read from is never written to, a
    // crash before the model's rename leaves the old pair whole, and the old
    // data file is removed once the new model is in place.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.onnx.data"),
        f32_bytes(&[1.0, 2.0, 3.0, 4.0]),
    )
    .unwrap();
    let path = write_model(dir.path(), &[("location", "m.onnx.data")]);
    let model = Model::load(&path).unwrap();
    let id = model.find_tensor("W").unwrap();
    let mut edits = Edits::default();
    edits.set(id, vec![5.0, 6.0, 7.0, 8.0]);
    let opts = SaveOptions {
        in_place: true,
        ..Default::default()
    };
    model.save(&path, &edits, &opts).unwrap();
    drop(model);
    let reloaded = Model::load(&path).unwrap();
    assert_eq!(reloaded.read_f64(id).unwrap(), vec![5.0, 6.0, 7.0, 8.0]);
    assert!(dir.path().join("m.onnx.1.data").exists());
    assert!(!dir.path().join("m.onnx.data").exists());
    // Writing the model over its own data file is refused.
    let err = reloaded
        .save(
            dir.path().join("m.onnx.1.data"),
            &Edits::default(),
            &SaveOptions {
                overwrite: true,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("external data file"), "{err}");
}
