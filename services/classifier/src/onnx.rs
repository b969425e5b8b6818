//! The classifier's model as an ONNX graph with two heads over one feature vector —
//! `task_type = Softmax(features · W₁ + b₁)` and `complexity = Softmax(features · W₂ + b₂)` —
//! written here with the protobuf types tract-onnx exposes, and served by tract. The graph
//! carries its feature version and label names as metadata; loading refuses a model whose
//! feature version is not the extractor's, or whose outputs do not match its labels.

use crate::features::{DIMENSIONS, FEATURE_VERSION};
use crate::linear::LinearModel;
use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::type_proto::{self, Tensor as TensorType};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto,
};
use tract_onnx::prelude::*;

const INPUT: &str = "features";
const TASK_TYPE_OUTPUT: &str = "task_type";
const COMPLEXITY_OUTPUT: &str = "complexity";
const OPSET: i64 = 13;

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not an ONNX model: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the model was trained on features {found:?}, but this build extracts {expected:?}")]
    FeatureVersion { found: String, expected: &'static str },
    #[error("the model's metadata lacks {0}")]
    Metadata(&'static str),
    #[error("tract cannot run the model: {0}")]
    Tract(String),
}

/// The two trained heads and their label names, in output order.
#[derive(Debug, Clone, PartialEq)]
pub struct Heads {
    pub task_type: LinearModel,
    pub task_types: Vec<String>,
    pub complexity: LinearModel,
    pub complexities: Vec<String>,
}

/// A loaded, optimised model ready to classify.
#[derive(Debug)]
pub struct ServingModel {
    plan: std::sync::Arc<TypedSimplePlan>,
    pub task_types: Vec<String>,
    pub complexities: Vec<String>,
    pub version: String,
}

/// Probabilities from both heads for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Probabilities {
    pub task_type: Vec<f32>,
    pub complexity: Vec<f32>,
}

/// Serialises `heads` as ONNX with the label names and `version` in the metadata.
pub fn write(heads: &Heads, version: &str) -> Vec<u8> {
    let float_tensor = |name: &str, dims: Vec<i64>, data: Vec<f32>| TensorProto {
        name: name.to_owned(),
        dims,
        data_type: DataType::Float as i32,
        float_data: data,
        ..TensorProto::default()
    };
    let value_info = |name: &str, dims: [Option<i64>; 2]| ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(TensorType {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(n) => dimension::Value::DimValue(*n),
                                None => dimension::Value::DimParam("batch".into()),
                            }),
                            ..Dimension::default()
                        })
                        .collect(),
                }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    };
    let node = |op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>| NodeProto {
        op_type: op.to_owned(),
        name: output.to_owned(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.to_owned()],
        attribute,
        ..NodeProto::default()
    };
    let axis = AttributeProto {
        name: "axis".into(),
        r#type: attribute_proto::AttributeType::Int as i32,
        i: 1,
        ..AttributeProto::default()
    };
    let mut nodes = Vec::new();
    let mut initializers = Vec::new();
    let mut outputs = Vec::new();
    for (name, model) in [(TASK_TYPE_OUTPUT, &heads.task_type), (COMPLEXITY_OUTPUT, &heads.complexity)] {
        let (weights, bias) = (format!("{name}_weights"), format!("{name}_bias"));
        let (unbiased, logits) = (format!("{name}_logits_unbiased"), format!("{name}_logits"));
        nodes.push(node("MatMul", &[INPUT, &weights], &unbiased, vec![]));
        nodes.push(node("Add", &[&unbiased, &bias], &logits, vec![]));
        nodes.push(node("Softmax", &[&logits], name, vec![axis.clone()]));
        initializers.push(float_tensor(
            &weights,
            vec![model.dimensions as i64, model.classes as i64],
            model.weights.clone(),
        ));
        initializers.push(float_tensor(&bias, vec![model.classes as i64], model.bias.clone()));
        outputs.push(value_info(name, [None, Some(model.classes as i64)]));
    }
    let graph = GraphProto {
        name: "codingagent-classifier".into(),
        node: nodes,
        initializer: initializers,
        input: vec![value_info(INPUT, [None, Some(heads.task_type.dimensions as i64)])],
        output: outputs,
        ..GraphProto::default()
    };
    let metadata = |key: &str, value: String| StringStringEntryProto { key: key.into(), value };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "codingagent-classifier".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: vec![
            metadata("feature_version", FEATURE_VERSION.into()),
            metadata("task_types", heads.task_types.join("\n")),
            metadata("complexities", heads.complexities.join("\n")),
            metadata("model_version", version.into()),
        ],
        ..ModelProto::default()
    }
    .encode_to_vec()
}

impl ServingModel {
    /// Decodes, checks and optimises a model for single requests.
    pub fn load(bytes: &[u8]) -> Result<Self, LoadError> {
        let proto = ModelProto::decode(bytes)?;
        let meta = |key: &'static str| {
            proto
                .metadata_props
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.clone())
                .ok_or(LoadError::Metadata(key))
        };
        let found = meta("feature_version")?;
        if found != FEATURE_VERSION {
            return Err(LoadError::FeatureVersion { found, expected: FEATURE_VERSION });
        }
        let labels = |key| meta(key).map(|v| v.split('\n').map(str::to_owned).collect::<Vec<_>>());
        let (task_types, complexities) = (labels("task_types")?, labels("complexities")?);
        let version = meta("model_version")?;
        let tract = |e: TractError| LoadError::Tract(e.to_string());
        let plan = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .map_err(tract)?
            .with_input_fact(0, f32::fact([1, DIMENSIONS]).into())
            .map_err(tract)?
            .into_optimized()
            .map_err(tract)?
            .into_runnable()
            .map_err(tract)?;
        let serving = Self { plan, task_types, complexities, version };
        // A model whose outputs do not match its labels would mislabel every request.
        let probe =
            serving.probabilities(&vec![0.0; DIMENSIONS]).map_err(|e| LoadError::Tract(e.to_string()))?;
        if probe.task_type.len() != serving.task_types.len()
            || probe.complexity.len() != serving.complexities.len()
        {
            return Err(LoadError::Metadata("labels matching the outputs"));
        }
        Ok(serving)
    }

    /// Both heads' probabilities for one feature vector.
    pub fn probabilities(&self, features: &[f32]) -> TractResult<Probabilities> {
        let input = Tensor::from_shape(&[1, features.len()], features)?;
        let outputs = self.plan.run(tvec!(input.into()))?;
        let read = |i: usize| -> TractResult<Vec<f32>> {
            let output =
                outputs.get(i).ok_or_else(|| TractError::msg(format!("the model has no output {i}")))?;
            Ok(output.to_plain_array_view::<f32>()?.iter().copied().collect())
        };
        Ok(Probabilities { task_type: read(0)?, complexity: read(1)? })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::features::extract;
    use crate::linear::{Example, Training};

    /// A small two-head model trained on a handful of requests.
    pub(crate) fn trained() -> Heads {
        let texts = [
            ("fix crash when the config file is missing", 0, 0),
            ("fix null pointer in the login handler", 0, 0),
            ("bug: parser panics on empty input", 0, 1),
            ("add dark mode to the settings page", 1, 1),
            ("implement export to csv", 1, 1),
            ("support oauth login with github across every service", 1, 2),
            ("document the deployment steps in the readme", 2, 0),
            ("fix typos in the api docs", 2, 0),
            ("write a guide for contributors", 2, 1),
        ];
        let examples = |head: fn(&(&str, usize, usize)) -> usize| -> Vec<Example> {
            texts.iter().map(|t| Example::new(&extract(t.0), head(t))).collect()
        };
        let settings = Training { epochs: 100, ..Training::default() };
        Heads {
            task_type: LinearModel::train(&examples(|t| t.1), DIMENSIONS, 3, settings),
            task_types: ["bug_fix", "feature", "documentation"].map(String::from).to_vec(),
            complexity: LinearModel::train(&examples(|t| t.2), DIMENSIONS, 3, settings),
            complexities: ["simple", "medium", "complex"].map(String::from).to_vec(),
        }
    }

    fn close(expected: &[f32], served: &[f32]) -> bool {
        expected.len() == served.len() && expected.iter().zip(served).all(|(a, b)| (a - b).abs() < 1e-5)
    }

    #[test]
    fn tract_computes_the_same_probabilities_as_rust() {
        let heads = trained();
        let serving = ServingModel::load(&write(&heads, "test-1")).unwrap();
        assert_eq!(serving.task_types, heads.task_types);
        assert_eq!(serving.complexities, heads.complexities);
        assert_eq!(serving.version, "test-1");
        for text in
            ["fix the crash on startup", "add a button to export reports", "update the install docs", "???"]
        {
            let features = extract(text);
            let served = serving.probabilities(&features).unwrap();
            let task_type = heads.task_type.probabilities(&features);
            let complexity = heads.complexity.probabilities(&features);
            assert!(close(&task_type, &served.task_type), "{text}: rust {task_type:?} vs tract {served:?}");
            assert!(
                close(&complexity, &served.complexity),
                "{text}: rust {complexity:?} vs tract {served:?}"
            );
        }
    }

    #[test]
    fn corrupted_and_mismatched_models_are_refused() {
        let bytes = write(&trained(), "v");
        assert!(matches!(
            ServingModel::load(&bytes[..bytes.len() / 2]),
            Err(LoadError::Decode(_) | LoadError::Tract(_))
        ));
        assert!(ServingModel::load(b"not a model at all").is_err());

        let mut proto = ModelProto::decode(bytes.as_slice()).unwrap();
        proto
            .metadata_props
            .iter_mut()
            .filter(|e| e.key == "feature_version")
            .for_each(|e| e.value = "features-v0".into());
        match ServingModel::load(&proto.encode_to_vec()) {
            Err(LoadError::FeatureVersion { found, .. }) => assert_eq!(found, "features-v0"),
            other => panic!("{other:?}"),
        }

        let mut two_labels = trained();
        two_labels.task_types.pop();
        assert!(matches!(ServingModel::load(&write(&two_labels, "v")), Err(LoadError::Metadata(_))));
    }
}
