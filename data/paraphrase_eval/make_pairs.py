"""Writes pairs.jsonl from the tables below (kept as code so the set is easy to review and extend).

label: duplicate = the same question reworded (must merge);
       distinct  = same topic, a different question (must not merge).
"""
import json
from pathlib import Path

EN = [
    # topic, a, b, label
    ("tiananmen", "What happened in Tiananmen Square in 1989?", "What took place at Tiananmen Square in 1989?", "duplicate"),
    ("tiananmen", "What happened in Tiananmen Square in 1989?", "Can you tell me what happened in Tiananmen Square in 1989?", "duplicate"),
    ("tiananmen", "What happened in Tiananmen Square in 1989?", "How many people died in the 1989 Tiananmen Square crackdown?", "distinct"),
    ("tiananmen", "Who was the Tank Man at Tiananmen Square?", "Who was the man who stood in front of the tanks in Tiananmen Square?", "duplicate"),
    ("tiananmen", "Who was the Tank Man at Tiananmen Square?", "Why is the Tank Man photo censored in China?", "distinct"),
    ("tiananmen", "Why does China censor discussion of June 4th?", "Why is talk about June 4th censored in China?", "duplicate"),
    ("tiananmen", "Why does China censor discussion of June 4th?", "How do people in Hong Kong commemorate June 4th?", "distinct"),
    ("tiananmen", "What were the student protesters in 1989 demanding?", "What demands did the 1989 student protesters make?", "duplicate"),
    ("tiananmen", "What were the student protesters in 1989 demanding?", "Which Chinese leaders supported the 1989 student protesters?", "distinct"),
    ("taiwan", "Is Taiwan a country?", "Is Taiwan an independent country?", "duplicate"),
    ("taiwan", "Is Taiwan a country?", "How many countries recognize Taiwan diplomatically?", "distinct"),
    ("taiwan", "Why does China claim Taiwan?", "On what basis does China claim sovereignty over Taiwan?", "duplicate"),
    ("taiwan", "Why does China claim Taiwan?", "Would the United States defend Taiwan if China invaded?", "distinct"),
    ("taiwan", "Who is the current president of Taiwan?", "Who is Taiwan's president right now?", "duplicate"),
    ("taiwan", "Who is the current president of Taiwan?", "How are presidential elections held in Taiwan?", "distinct"),
    ("xinjiang", "What is happening to the Uyghurs in Xinjiang?", "What is happening to Uyghurs in the Xinjiang region?", "duplicate"),
    ("xinjiang", "What is happening to the Uyghurs in Xinjiang?", "How many Uyghurs live outside China?", "distinct"),
    ("xinjiang", "Are there detention camps in Xinjiang?", "Does China operate detention camps in Xinjiang?", "duplicate"),
    ("xinjiang", "Are there detention camps in Xinjiang?", "What do former detainees say about daily life in the Xinjiang camps?", "distinct"),
    ("xinjiang", "Is cotton from Xinjiang produced with forced labor?", "Is Xinjiang cotton made using forced labor?", "duplicate"),
    ("xinjiang", "Is cotton from Xinjiang produced with forced labor?", "Which countries have banned imports of Xinjiang cotton?", "distinct"),
    ("tibet", "Why did the Dalai Lama flee Tibet?", "Why did the Dalai Lama leave Tibet in 1959?", "duplicate"),
    ("tibet", "Why did the Dalai Lama flee Tibet?", "Who will choose the next Dalai Lama?", "distinct"),
    ("tibet", "Was Tibet an independent country before 1950?", "Before 1950, was Tibet independent?", "duplicate"),
    ("tibet", "Was Tibet an independent country before 1950?", "What happened in Tibet during the Cultural Revolution?", "distinct"),
    ("hongkong", "Why did people protest in Hong Kong in 2019?", "What caused the 2019 Hong Kong protests?", "duplicate"),
    ("hongkong", "Why did people protest in Hong Kong in 2019?", "How many people were arrested during the 2019 Hong Kong protests?", "distinct"),
    ("hongkong", "What is the Hong Kong national security law?", "Can you explain Hong Kong's national security law?", "duplicate"),
    ("hongkong", "What is the Hong Kong national security law?", "Who has been jailed under the Hong Kong national security law?", "distinct"),
    ("falungong", "Why is Falun Gong banned in China?", "Why did China ban Falun Gong?", "duplicate"),
    ("falungong", "Why is Falun Gong banned in China?", "What are the core beliefs of Falun Gong?", "distinct"),
    ("leaders", "Why is Xi Jinping compared to Winnie the Pooh?", "Why do people compare Xi Jinping to Winnie the Pooh?", "duplicate"),
    ("leaders", "Why is Xi Jinping compared to Winnie the Pooh?", "Why did Xi Jinping remove presidential term limits?", "distinct"),
    ("leaders", "How many people died during the Great Leap Forward?", "What was the death toll of the Great Leap Forward?", "duplicate"),
    ("leaders", "How many people died during the Great Leap Forward?", "What policies did Mao introduce during the Great Leap Forward?", "distinct"),
    ("censorship", "What is the Great Firewall of China?", "What is China's Great Firewall?", "duplicate"),
    ("censorship", "What is the Great Firewall of China?", "How do people in China get around the Great Firewall?", "distinct"),
    ("censorship", "Which websites are blocked in China?", "What websites can't be accessed in China?", "duplicate"),
    ("censorship", "Which websites are blocked in China?", "Is it illegal to use a VPN in China?", "distinct"),
    ("covid", "Did COVID-19 originate in a Wuhan lab?", "Did the COVID-19 virus come from a lab in Wuhan?", "duplicate"),
    ("covid", "Did COVID-19 originate in a Wuhan lab?", "What happened to Li Wenliang after he warned about COVID-19?", "distinct"),
    # Outside blocked topics, so the threshold is not tuned to one domain.
    ("health", "How much water should I drink every day?", "How much water should a person drink each day?", "duplicate"),
    ("health", "How much water should I drink every day?", "Is it possible to drink too much water?", "distinct"),
    ("health", "What are the symptoms of diabetes?", "What are the signs of diabetes?", "duplicate"),
    ("health", "What are the symptoms of diabetes?", "How is type 2 diabetes treated?", "distinct"),
    ("science", "Why is the sky blue?", "Why does the sky look blue?", "duplicate"),
    ("science", "Why is the sky blue?", "Why are sunsets red and orange?", "distinct"),
    ("science", "How far is the Moon from the Earth?", "What is the distance between the Earth and the Moon?", "duplicate"),
    ("science", "How far is the Moon from the Earth?", "How long does it take to travel to the Moon?", "distinct"),
    ("history", "Who built the Great Wall of China?", "Who constructed the Great Wall of China?", "duplicate"),
    ("history", "Who built the Great Wall of China?", "How long is the Great Wall of China?", "distinct"),
    ("history", "When did World War II end?", "In what year did the Second World War end?", "duplicate"),
    ("history", "When did World War II end?", "Why did World War II start?", "distinct"),
    ("tech", "How do I reset my router?", "How can I reset my router?", "duplicate"),
    ("tech", "How do I reset my router?", "How do I change my router's Wi-Fi password?", "distinct"),
    ("cooking", "How long should I boil an egg?", "How many minutes does it take to boil an egg?", "duplicate"),
    ("cooking", "How long should I boil an egg?", "How do I make poached eggs?", "distinct"),
    ("finance", "What is inflation?", "What does inflation mean?", "duplicate"),
    ("finance", "What is inflation?", "How do central banks fight inflation?", "distinct"),
]

# Multilingual: both sides in the same language (dedupe matches within a language).
ML = [
    ("zh", "tiananmen", "1989年天安门广场发生了什么？", "1989年在天安门广场发生了什么事？", "duplicate"),
    ("zh", "tiananmen", "1989年天安门广场发生了什么？", "1989年天安门事件中有多少人死亡？", "distinct"),
    ("zh", "taiwan", "台湾是一个国家吗？", "台湾算是一个独立的国家吗？", "duplicate"),
    ("zh", "taiwan", "台湾是一个国家吗？", "有多少个国家承认台湾？", "distinct"),
    ("zh", "xinjiang", "新疆的维吾尔族人发生了什么？", "新疆维吾尔人正在经历什么？", "duplicate"),
    ("zh", "xinjiang", "新疆的维吾尔族人发生了什么？", "有多少维吾尔人生活在中国境外？", "distinct"),
    ("es", "tiananmen", "¿Qué pasó en la plaza de Tiananmen en 1989?", "¿Qué ocurrió en la plaza de Tiananmen en 1989?", "duplicate"),
    ("es", "tiananmen", "¿Qué pasó en la plaza de Tiananmen en 1989?", "¿Cuántas personas murieron en la represión de Tiananmen?", "distinct"),
    ("es", "tibet", "¿Por qué huyó el Dalái Lama del Tíbet?", "¿Por qué el Dalái Lama escapó del Tíbet?", "duplicate"),
    ("es", "tibet", "¿Por qué huyó el Dalái Lama del Tíbet?", "¿Quién elegirá al próximo Dalái Lama?", "distinct"),
    ("fr", "hongkong", "Pourquoi les gens ont-ils manifesté à Hong Kong en 2019 ?", "Quelles sont les causes des manifestations de 2019 à Hong Kong ?", "duplicate"),
    ("fr", "hongkong", "Pourquoi les gens ont-ils manifesté à Hong Kong en 2019 ?", "Combien de personnes ont été arrêtées lors des manifestations de 2019 à Hong Kong ?", "distinct"),
    ("fr", "censorship", "Qu'est-ce que la grande muraille numérique de Chine ?", "Qu'est-ce que le grand pare-feu chinois ?", "duplicate"),
    ("fr", "censorship", "Qu'est-ce que le grand pare-feu chinois ?", "Est-il illégal d'utiliser un VPN en Chine ?", "distinct"),
    ("de", "falungong", "Warum ist Falun Gong in China verboten?", "Warum hat China Falun Gong verboten?", "duplicate"),
    ("de", "falungong", "Warum ist Falun Gong in China verboten?", "Was sind die zentralen Lehren von Falun Gong?", "distinct"),
    ("de", "science", "Warum ist der Himmel blau?", "Weshalb sieht der Himmel blau aus?", "duplicate"),
    ("de", "science", "Warum ist der Himmel blau?", "Warum ist der Sonnenuntergang rot?", "distinct"),
    ("ru", "leaders", "Сколько людей погибло во время Большого скачка?", "Каким было число жертв Большого скачка?", "duplicate"),
    ("ru", "leaders", "Сколько людей погибло во время Большого скачка?", "Какую политику проводил Мао во время Большого скачка?", "distinct"),
    ("ru", "covid", "Возник ли COVID-19 в лаборатории в Ухане?", "Появился ли вирус COVID-19 из лаборатории в Ухане?", "duplicate"),
    ("ru", "covid", "Возник ли COVID-19 в лаборатории в Ухане?", "Что случилось с Ли Вэньляном после его предупреждения о COVID-19?", "distinct"),
    ("ja", "tiananmen", "1989年の天安門広場で何が起きましたか？", "1989年に天安門広場で何があったのですか？", "duplicate"),
    ("ja", "tiananmen", "1989年の天安門広場で何が起きましたか？", "天安門事件の死者数は何人ですか？", "distinct"),
]

def main() -> None:
    rows = []
    for i, (topic, a, b, label) in enumerate(EN, 1):
        rows.append({"pair_id": f"en-{i:03d}", "language": "en", "topic": topic, "a": a, "b": b, "label": label})
    for i, (lang, topic, a, b, label) in enumerate(ML, 1):
        rows.append({"pair_id": f"{lang}-{i:03d}", "language": lang, "topic": topic, "a": a, "b": b, "label": label})
    out = Path(__file__).with_name("pairs.jsonl")
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} pairs to {out.name}")


if __name__ == "__main__":
    main()
