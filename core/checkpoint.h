// Model directories: config.json (Hugging Face fields) + model.safetensors (Hugging Face tensor
// names) + the tokenizer file the model was trained with (tokenizer.model or tokenizer.json).
// Every file is written atomically; a directory written by keel loads in transformers as is.
#pragma once

#include <string>

#include "core/safetensors.h"
#include "core/safetensors_file.h"
#include "core/transformer.h"

namespace keel {

// The files of a model directory, named here only.
inline constexpr const char* kModelWeightsFile = "model.safetensors";
inline constexpr const char* kModelConfigFile = "config.json";
std::string model_weights_path(const std::string& dir);  // dir/model.safetensors
std::string model_config_path(const std::string& dir);   // dir/config.json

// Writes config.json and model.safetensors into `dir` (created if needed); copies the tokenizer
// beside them when given: `tokenizer_file` is a path load_tokenizer takes (a tokenizer.model or
// tokenizer.json file, or a directory holding one, or vocab.json + merges.txt), and the
// tokenizer_config.json beside it (which names the chat format) comes too. Tied lm_head weights
// are not written (as Hugging Face does).
void save_model(const std::string& dir, Transformer& model, const std::string& tokenizer_file = "");
// The same from a model's config and tensors (model_tensors: e.g. a copy taken to be written while
// the model goes on training).
void save_model(const std::string& dir, const ModelConfig& config, const TensorMap& tensors,
                const std::string& tokenizer_file = "");

ModelConfig load_model_config(const std::string& dir);

// Loads a model directory as its config describes it (core/model_loader.h adds heads, the device
// and the tokenizer). Missing or misshapen tensors are errors that name the tensor; a scalar head
// the config asks for but the file lacks is left at its initial value when `allow_new_heads`.
Transformer load_model(const std::string& dir, bool allow_new_heads = false);

// The tensors of `model` under Hugging Face names (tied lm_head omitted).
TensorMap model_tensors(Transformer& model);

// Copies `tensors` into `model`'s parameters, checking names and shapes; `origin` names the source.
void load_weights(Transformer& model, const TensorMap& tensors, const std::string& origin, bool allow_new_heads);
// The same from a file, each tensor read straight into its parameter (converted when the dtypes or
// devices differ).
void load_weights(Transformer& model, const SafetensorsFile& file, bool allow_new_heads);
// A model of `config` holding `file`'s weights. Parameters the file lacks (scalar heads, when
// allow_new_heads) take the values init_weights(init_seed) gives them. keel's random
// initialisation (a third of a 124M model's load) runs only when the file lacks a reward head.
Transformer load_model_weights(const ModelConfig& config, const SafetensorsFile& file, bool allow_new_heads,
                               uint64_t init_seed = 0);

// Makes `model`'s parameters views of `tensors` without copying (e.g. of shared weights; see
// wire/weights/region.h) when every parameter but a scalar head has a tensor of its name, shape
// and dtype, on the model's device. Returns false, leaving the model unchanged, otherwise. The
// memory behind `tensors` must outlive the binding and must not be written through the model.
bool bind_weights(Transformer& model, const TensorMap& tensors);

// Path of the tokenizer stored in a model directory, or "" when there is none.
std::string model_tokenizer_file(const std::string& dir);

}  // namespace keel
