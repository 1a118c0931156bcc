//! Every WGSL module perplex can build, checked without a GPU: each parses and validates with
//! naga (the shader translator wgpu runs), and each kernel's parameter block in Rust
//! (`perplex::gpu::ops`) has the fields of its shader's `struct Params`: same names, same types,
//! same offsets, same size. A mismatch fails here instead of producing wrong numbers.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, ResourceBinding, Scalar, ScalarKind, TypeInner};
use perplex::gpu::{all_variants, dump_shaders, ShaderVariant};

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
            // Subgroup operations are the only capability beyond core WGSL the kernels use.
            let mut validator = Validator::new(ValidationFlags::all(), Capabilities::SUBGROUP);
            validator.validate(&module).map(|_| ()).map_err(|e| e.emit_to_string_with_path(&variant.source(), &variant.file_name()))
        });
        if let Err(e) = checked {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{} of {} modules do not validate:\n{}", failures.len(), variants.len(), failures.join("\n"));
}

/// The fields of the module's uniform `params` (binding 0) as (name, offset, scalar type), and its size.
fn shader_params(module: &naga::Module) -> (usize, Vec<(String, usize, String)>) {
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
    let mut mismatches = Vec::new();
    for variant in all_variants() {
        let module = parse(variant).unwrap();
        let (shader_size, shader) = shader_params(&module);
        let layout = variant.kernel.params_layout();
        let rust: Vec<(String, usize, String)> = layout.fields.iter().map(|f| (f.name.to_string(), f.offset, f.scalar.to_string())).collect();
        if rust != shader || layout.size != shader_size {
            let show = |fields: &[(String, usize, String)]| fields.iter().map(|(n, o, t)| format!("{n}: {t} @ {o}")).collect::<Vec<_>>().join(", ");
            mismatches.push(format!(
                "{}: Rust {} bytes [{}]\n{:>w$}  WGSL {} bytes [{}]",
                variant.file_name(),
                layout.size,
                show(&rust),
                "",
                shader_size,
                show(&shader),
                w = variant.file_name().len()
            ));
        }
    }
    assert!(mismatches.is_empty(), "parameter blocks that differ from their shader's Params:\n{}", mismatches.join("\n"));
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
