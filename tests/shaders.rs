//! Every WGSL module perplex can build, checked without a GPU: each parses and validates with
//! naga (the shader translator wgpu runs), and each kernel's parameter block in Rust
//! (`perplex::gpu::ops`) has the fields of its shader's `struct Params`: same names, same types,
//! same offsets, same size. A mismatch fails here instead of producing wrong numbers.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, ResourceBinding, Scalar, ScalarKind, TypeInner};
use perplex::gpu::{all_variants, dump_shaders, ShaderVariant};

/// A parameter block's fields as (name, offset, scalar type).
type Fields = Vec<(String, usize, String)>;

fn parse(variant: ShaderVariant) -> Result<naga::Module, String> {
    let source = variant.source();
    naga::front::wgsl::parse_str(&source).map_err(|e| e.emit_to_string_with_path(&source, &variant.file_name()))
}

#[test]
fn every_variant_parses_and_validates() {
    let variants = all_variants();
    let mut failures = Vec::new();
    for &variant in &variants {
        let checked = parse(variant).and_then(|module| {
            // Beyond core WGSL the kernels use subgroup operations (where the device has them)
            // and unpack2x16float (f16 weights), which wgpu grants wherever the adapter has it.
            let mut validator = Validator::new(ValidationFlags::all(), Capabilities::SUBGROUP | Capabilities::SHADER_FLOAT16_IN_FLOAT32);
            validator.validate(&module).map(|_| ()).map_err(|e| e.emit_to_string_with_path(&variant.source(), &variant.file_name()))
        });
        if let Err(e) = checked {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{} of {} modules do not validate:\n{}", failures.len(), variants.len(), failures.join("\n"));
}

/// The size of the module's uniform `params` (binding 0) and its fields as (name, offset, scalar type).
fn shader_params(module: &naga::Module) -> (usize, Fields) {
    let (_, params) = module
        .global_variables
        .iter()
        .find(|(_, var)| var.space == AddressSpace::Uniform && var.binding == Some(ResourceBinding { group: 0, binding: 0 }))
        .expect("a uniform at binding 0");
    let TypeInner::Struct { members, span } = &module.types[params.ty].inner else { panic!("params is not a struct") };
    let fields = members
        .iter()
        .map(|member| {
            let scalar = match module.types[member.ty].inner {
                TypeInner::Scalar(Scalar { kind: ScalarKind::Uint, width: 4 }) => "u32".to_string(),
                TypeInner::Scalar(Scalar { kind: ScalarKind::Float, width: 4 }) => "f32".to_string(),
                ref other => format!("{other:?}"),
            };
            (member.name.clone().unwrap_or_default(), member.offset as usize, scalar)
        })
        .collect();
    (*span as usize, fields)
}

#[test]
fn parameter_structs_match_every_shader() {
    // Each distinct mismatch once: (Rust's, the shader's, the modules that show it).
    type Block = (usize, Fields);
    let mut mismatches: Vec<(Block, Block, Vec<String>)> = Vec::new();
    for variant in all_variants() {
        let module = parse(variant).unwrap();
        let shader = shader_params(&module);
        let layout = variant.kernel.params_layout();
        let rust = (layout.size, layout.fields.iter().map(|f| (f.name.to_string(), f.offset, f.scalar.to_string())).collect());
        if rust != shader {
            match mismatches.iter_mut().find(|(r, s, _)| *r == rust && *s == shader) {
                Some((_, _, files)) => files.push(variant.file_name()),
                None => mismatches.push((rust, shader, vec![variant.file_name()])),
            }
        }
    }
    let show = |(size, fields): &Block| {
        let fields: Vec<String> = fields.iter().map(|(name, offset, scalar)| format!("{name}: {scalar} @ {offset}")).collect();
        format!("{size} bytes [{}]", fields.join(", "))
    };
    let report: Vec<String> = mismatches
        .iter()
        .map(|(rust, shader, files)| format!("{} and {} more:
  Rust {}
  WGSL {}", files[0], files.len() - 1, show(rust), show(shader)))
        .collect();
    assert!(report.is_empty(), "parameter structs that differ from their shader's Params:\n{}", report.join("\n"));
}

#[test]
fn every_variant_is_dumped_once_with_a_header() {
    let dir = std::env::temp_dir().join(format!("perplex-shaders-{}", std::process::id()));
    let count = dump_shaders(&dir).unwrap();
    let variants = all_variants();
    assert_eq!(count, variants.len());
    let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let mut expected: Vec<String> = variants.iter().map(|v| v.file_name()).collect();
    expected.sort();
    assert_eq!(names, expected, "one file per variant, no two with the same name");
    for variant in &variants {
        let text = std::fs::read_to_string(dir.join(variant.file_name())).unwrap();
        assert_eq!(text, variant.source());
        assert!(text.starts_with(&format!("// perplex kernel {:?}", variant.kernel)), "{}", variant.file_name());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
