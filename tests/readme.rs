//! README.md's `Platform` implementation is `sketch/src/lib.rs`, which CI compiles for both
//! bare-metal targets: this keeps the text a reader copies the text that compiles.

#[test]
fn readme_platform_sketch_is_the_compiled_one() {
    let readme = include_str!("../README.md");
    let sketch = include_str!("../sketch/src/lib.rs");
    let begin = "// README-BEGIN\n";
    let start = sketch.find(begin).expect("begin marker") + begin.len();
    let end = sketch.find("// README-END").expect("end marker");
    let compiled = &sketch[start..end];
    assert!(
        readme.contains(&format!("```rust,ignore\n{compiled}```")),
        "README.md's Platform sketch differs from sketch/src/lib.rs: copy it over"
    );
}
