//! The classifier's model as an ONNX graph — `probabilities = Softmax(features · W + b)` — written
//! here with the protobuf types tract-onnx exposes, and served by tract. The graph carries its
//! feature version and label names as metadata; loading refuses a model whose feature version
//! is not the extractor's, or whose shape does not match its labels.

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
const OUTPUT: &str = "probabilities";
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

/// A loaded, optimised model ready to classify.
#[derive(Debug)]
pub struct ServingModel {
    plan: std::sync::Arc<TypedSimplePlan>,
    pub labels: Vec<String>,
    pub version: String,
}

/// Serialises `model` as ONNX with its labels and version in the metadata.
pub fn write(model: &LinearModel, labels: &[String], version: &str) -> Vec<u8> {
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
    let graph = GraphProto {
        name: "codingagent-classifier".into(),
        node: vec![
            node("MatMul", &[INPUT, "weights"], "logits_unbiased", vec![]),
            node("Add", &["logits_unbiased", "bias"], "logits", vec![]),
            node("Softmax", &["logits"], OUTPUT, vec![axis]),
        ],
        initializer: vec![
            float_tensor(
                "weights",
                vec![model.dimensions as i64, model.classes as i64],
                model.weights.clone(),
            ),
            float_tensor("bias", vec![model.classes as i64], model.bias.clone()),
        ],
        input: vec![value_info(INPUT, [None, Some(model.dimensions as i64)])],
        output: vec![value_info(OUTPUT, [None, Some(model.classes as i64)])],
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
            metadata("labels", labels.join("\n")),
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
        let labels: Vec<String> = meta("labels")?.split('\n').map(str::to_owned).collect();
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
        let serving = Self { plan, labels, version };
        // A model whose output does not match its labels would mislabel every request.
        let probe =
            serving.probabilities(&vec![0.0; DIMENSIONS]).map_err(|e| LoadError::Tract(e.to_string()))?;
        if probe.len() != serving.labels.len() {
            return Err(LoadError::Metadata("labels matching the output"));
        }
        Ok(serving)
    }

    /// Class probabilities for one feature vector.
    pub fn probabilities(&self, features: &[f32]) -> TractResult<Vec<f32>> {
        let input = Tensor::from_shape(&[1, features.len()], features)?;
        let outputs = self.plan.run(tvec!(input.into()))?;
        Ok(outputs[0].to_plain_array_view::<f32>()?.iter().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::extract;
    use crate::linear::{Example, Training};

    fn labels() -> Vec<String> {
        ["bug_fix", "feature", "documentation"].map(String::from).to_vec()
    }

    fn trained() -> LinearModel {
        let texts = [
            ("fix crash when the config file is missing", 0),
            ("fix null pointer in the login handler", 0),
            ("bug: parser panics on empty input", 0),
            ("add dark mode to the settings page", 1),
            ("implement export to csv", 1),
            ("support oauth login with github", 1),
            ("document the deployment steps in the readme", 2),
            ("fix typos in the api docs", 2),
            ("write a guide for contributors", 2),
        ];
        let examples: Vec<Example> =
            texts.iter().map(|(t, l)| Example { features: extract(t), label: *l }).collect();
        LinearModel::train(&examples, DIMENSIONS, 3, Training { epochs: 100, ..Training::default() })
    }

    #[test]
    fn tract_computes_the_same_probabilities_as_rust() {
        let model = trained();
        let serving = ServingModel::load(&write(&model, &labels(), "test-1")).unwrap();
        assert_eq!(serving.labels, labels());
        assert_eq!(serving.version, "test-1");
        for text in
            ["fix the crash on startup", "add a button to export reports", "update the install docs", "???"]
        {
            let features = extract(text);
            let expected = model.probabilities(&features);
            let served = serving.probabilities(&features).unwrap();
            for (a, b) in expected.iter().zip(&served) {
                assert!((a - b).abs() < 1e-5, "{text}: rust {expected:?} vs tract {served:?}");
            }
        }
    }

    #[test]
    fn corrupted_and_mismatched_models_are_refused() {
        let bytes = write(&trained(), &labels(), "v");
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

        let two_labels = write(&trained(), &labels()[..2], "v");
        assert!(matches!(ServingModel::load(&two_labels), Err(LoadError::Metadata(_))));
    }
}
