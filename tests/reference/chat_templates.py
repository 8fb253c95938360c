"""Chat templates rendered as Hugging Face's apply_chat_template renders them: the chat_template
strings of the models' tokenizer_config.json, jinja2 with trim_blocks and lstrip_blocks, and
raise_exception. The reference for keel's chat formats (core/chat_template.h).

  chat_templates.py templates        -> {name: template string}
  chat_templates.py render CASES.json -> [rendered text or {"error": message}] for each case
     case: {"template": name, "messages": [...], "add_generation_prompt": bool,
            "bos_token": str, "eos_token": str}
"""
import json
import sys

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATES = {
    # keel's own format, written as a template
    "chat": "{% for message in messages %}{{ message['role'] | capitalize + ': ' + message['content'] + '\\n\\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}",
    # teknium/OpenHermes-2.5-Mistral-7B, Qwen chat models
    "chatml": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
              "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    # meta-llama/Llama-2-7b-chat-hf
    "llama2": "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
              "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
              "{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
              "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
              "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
              "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
              "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
              "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
              "{% endfor %}",
    # meta-llama/Meta-Llama-3-8B-Instruct
    "llama3": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
              "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
              "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
              "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
              "{% endif %}",
    # HuggingFaceH4/zephyr-7b-beta
    "zephyr": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + "
              "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token }}\n"
              "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n"
              "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
    # google/gemma-7b-it: a format keel has no preset for
    "gemma": "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
             "{% endif %}{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
             "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + "
             "message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}"
             "{{'<start_of_turn>model\\n'}}{% endif %}",
}


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def render(case):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(TEMPLATES[case["template"]])
    try:
        return template.render(messages=case["messages"], add_generation_prompt=case["add_generation_prompt"],
                               bos_token=case["bos_token"], eos_token=case["eos_token"])
    except jinja2.exceptions.TemplateError as e:
        return {"error": str(e)}


if __name__ == "__main__":
    if sys.argv[1] == "templates":
        print(json.dumps(TEMPLATES))
    else:
        with open(sys.argv[2]) as f:
            print(json.dumps([render(c) for c in json.load(f)]))
