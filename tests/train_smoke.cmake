# SPDX-License-Identifier: Apache-2.0
# tests/train_smoke.cmake: end-to-end smoke run of `grpo train` for CI (a few seconds): a tiny
# model, a few cold-start and GRPO steps, a small held-out evaluation. Checks the exit status, the
# before/after accuracy lines, metrics.jsonl with the required keys, the checkpoint and the model.
# With -DMODEL=DIR (a Hugging Face checkpoint with its tokenizer) and -DPOLICY=native|torch the
# same run starts from that checkpoint through that policy.
#   cmake -DGRPO=path/to/grpo -DWORK_DIR=dir [-DMODEL=dir -DPOLICY=torch] -P tests/train_smoke.cmake
if(NOT GRPO OR NOT WORK_DIR)
  message(FATAL_ERROR "train_smoke: pass -DGRPO=<grpo executable> -DWORK_DIR=<scratch directory>")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
if(MODEL)
  set(model_args --model "${MODEL}" --policy "${POLICY}" --set chat.template=plain --set beta=0.04)
  set(expected_files model/tokenizer.json)
else()
  set(model_args --set model.hidden_size=32 --set model.intermediate_size=64 --set model.num_hidden_layers=1
                 --set model.num_attention_heads=2 --set model.num_key_value_heads=1)
  set(expected_files checkpoint/model.safetensors checkpoint/optimizer.safetensors)
endif()
execute_process(
  COMMAND "${GRPO}" train --output-dir "${WORK_DIR}" --seed 7 ${model_args}
    --set task.operations=+ --set task.heldout_size=16
    --set sft.steps=4 --set sft.batch_size=8 --set max_steps=3
    --set per_device_train_batch_size=8 --set gradient_accumulation_steps=2 --set num_generations=4
    --set max_completion_length=24 --set dynamic_sampling=true
    --set eval.size=8 --set eval.num_samples=2 --set eval.pass_k=[1,2] --set threads=1
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "train_smoke: grpo train exited with ${rc}\n${out}\n${err}")
endif()
foreach(line "held-out accuracy after cold start:" "held-out accuracy after GRPO:")
  string(FIND "${out}" "${line}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "train_smoke: the output lacks '${line}'\n${out}")
  endif()
endforeach()
foreach(file metrics.jsonl model/model.safetensors model/config.json checkpoint/trainer_state.json
        checkpoint/config.toml ${expected_files})
  if(NOT EXISTS "${WORK_DIR}/${file}")
    message(FATAL_ERROR "train_smoke: ${WORK_DIR}/${file} was not written")
  endif()
endforeach()
file(STRINGS "${WORK_DIR}/metrics.jsonl" records)
list(LENGTH records n)
if(NOT n EQUAL 7)
  message(FATAL_ERROR "train_smoke: expected 7 metrics records (4 SFT + 3 GRPO steps), got ${n}")
endif()
list(GET records -1 last)
foreach(key step actor/pg_loss actor/kl actor/entropy actor/pg_clipfrac actor/grad_norm critic/score/mean
        reward/accuracy/mean reward/accuracy/std reward/format/mean reward/format/std accuracy format_rate
        response_length/mean response_length/max response_length/clip_ratio frac_reward_zero_std
        perf/rollout_tokens_per_s perf/train_tokens_per_s lr)
  string(JSON value ERROR_VARIABLE missing GET "${last}" "${key}")
  if(missing)
    message(FATAL_ERROR "train_smoke: the last metrics record lacks \"${key}\": ${last}")
  endif()
endforeach()
message(STATUS "train_smoke: ok (${n} records)")
